"""One module per server of the local stack: how to prepare, start and check it.

`base` holds what the recipes share (the Server record, installs); process control itself
(pid files, start, wait, stop) is `service_runtime.processes`, shared with the supervisor.
"""
