"""Which models exist and how they are fetched, compressed and loaded: the registry ($PARLEY_HOME/models),
pulling from a hub, quantizing with llama.cpp's own quantizer, and the pool of models loaded in one process."""
