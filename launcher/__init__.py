"""The launcher: the `campaigns` CLI and the supervisor, the only code that knows every process.

It imports the services lazily (inside the commands that run them), so `campaigns --help` or
`campaigns stack up` loads none of them.
"""
