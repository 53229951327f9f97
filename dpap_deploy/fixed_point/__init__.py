"""Fixed-point arithmetic of Lava's bit-accurate models: ``quantize`` (a float layer's integer
weights, exponents, decays, thresholds and biases, with the refusals where a value cannot fit)
and ``emulate`` (the integer synapse and neuron steps in torch, bit for bit)."""
