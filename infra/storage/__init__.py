"""Blob storage backends, chosen by name in settings; all raise application.ports.BlobNotFound."""
