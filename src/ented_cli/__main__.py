from ented_cli.cli import main

main()
