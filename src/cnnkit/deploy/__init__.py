"""Using a trained run outside Python and the training loop: ONNX export and onnxruntime inference
(``onnx.py``), TensorBoard event files (``tensorboard.py``), a self-contained HTML report
(``report.py``), a local browser app (``serve.py``) with checked uploads (``uploads.py``).

What differs between tasks (the ONNX output names, how a prediction is drawn, the report's tables,
the app's result panel) is one :class:`~cnnkit.deploy.views.TaskView` per task in ``views.py``: a
new task registers its view there (``register_view``) and every tool here serves it.

Heavy and optional imports (onnx, onnxruntime, tensorboard, FastAPI) happen inside functions.
"""
