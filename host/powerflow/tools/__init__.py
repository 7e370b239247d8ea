"""Developer tools: firmware build, test-vector generation, deployment."""
