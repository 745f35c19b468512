"""Inputs and outputs: model references (:mod:`.models_io`), data references
(:mod:`.datasets_io`, over :mod:`.image_folders` and :mod:`.tensor_files`, with the plain records
of :mod:`.data_spec`) and the facade of both (:mod:`.inputs`); fine-tuned weights are written
by the workers (``workers/artifacts.py``). Always imported as ``selector.io``, never put on ``sys.path``
itself, so it cannot shadow the standard library's :mod:`io`."""
