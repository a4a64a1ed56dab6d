"""Images as the pipeline receives them: raw buffers as views, sizes read from compressed
headers before any decoding, CPU decoding, and the capture of what C decoders print."""
