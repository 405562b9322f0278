"""The lake format: codecs, segments, the manifest, and where a lake lives."""
