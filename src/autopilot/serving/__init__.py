"""Online serving: the model the endpoint answers with, its request batching and its inference log."""
