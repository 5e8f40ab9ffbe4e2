"""The partner REST API under /api/v1/: one APIView per operation, thin over services and selectors."""
