"""``embedding-server embed``: a whole dataset to vectors, in-process or through a running server, resumable."""
