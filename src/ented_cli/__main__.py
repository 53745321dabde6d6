from ented_cli.cli.main import main

main()
