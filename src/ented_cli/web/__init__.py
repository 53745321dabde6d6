"""`ented serve`: a local web page that restores photos with the same pipeline as `ented restore`.

    command.py   the click command (click only at import time, so `ented --help` stays fast)
    server.py    binds the socket, prints the URL, runs uvicorn
    app.py       the Starlette routes: the page, uploads, job status, result files, the zip
    guard.py     who may talk to it: the Host and Origin checks, the token, security headers
    service.py   one RestorePipeline, one worker thread, a bounded queue of jobs
    jobs.py      a job, and its temporary folder (files named by the server, removed in time)
    uploads.py   what an upload must be: an image by content, within the size and pixel limits
    static/      the page: plain HTML, CSS and JavaScript, served as they are (no build step)

Starlette, uvicorn and python-multipart come with the `web` extra (`pip install "ented[web]"`).
"""
