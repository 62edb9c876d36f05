"""Which models exist and how they are fetched, compressed and loaded: the registry of model files under
$PARLEY_HOME, `pull` from a model hub, `quantize` through llama.cpp, and the loading of several models."""
