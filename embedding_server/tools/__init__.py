"""Stand-alone operator tools (e.g. the model downloader behind ``download-model.sh``).

Nothing here is imported by the serving code: tools may need network access and extra
dependencies that the offline server must never touch.
"""
