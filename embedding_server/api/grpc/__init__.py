"""TEI's gRPC API (package ``tei.v1``, ``tei.proto`` copied from text-embeddings-inference) as one more dialect of
the api layer: ``server.GrpcServer`` (started by the app when EMBED_GRPC_PORT is set; health and reflection),
``services`` (Info, Embed, Tokenize, Predict), ``rerank`` (Rerank), ``messages`` (between tei.v1 messages and our
types), ``calls`` (the key, the access log, TEI's codes, streams). Nothing is imported here: grpc loads only when the
port is set. ``tei_pb2*.py`` are generated: ``python -m embedding_server.tools.gen_grpc``."""
