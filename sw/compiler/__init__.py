"""The compiler: Llama checkpoints to dataflow kernels on the tile array."""
