"""SRT ingest: a ctypes binding of libsrt (`libsrt`) and the stream id grammar (`streamid`)."""
