"""Task streams: the Stream base class, experiences and modalities, stream files, task builders, and the data
cache they are built into."""
