"""Data selection: scorers that add columns (Deita complexity and quality, IFD, response length),
embeddings for diversity, and the selectors that pick a budget of records (deita, ifd, longest,
kcenter, random). Datasets are read and written by `synth.flows.selection`."""
