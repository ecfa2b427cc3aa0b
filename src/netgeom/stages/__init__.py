"""Pipeline stages as library functions: what each `netgeom <command>` (and DVC stage) runs.

Each takes the validated `Params` and a `Layout`, validates everything before it writes, and
writes its outputs atomically. A notebook can call them exactly as the CLI does.
"""
