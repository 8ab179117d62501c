"""Running a model: the llama.cpp engine, its decode loops, the reasoning splitter, prompt
preparation and chat formats."""
