"""`embed predict`: cells on new images of any size, written as TIFF, CSV, GeoJSON and overlay."""

from embedstore.trainer.predict.images import predict

__all__ = ["predict"]
