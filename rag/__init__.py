"""Local document QA: hybrid retrieval, reranking, cited answers."""
