"""The runtimes a recommender package's embedding model runs on: ONNX Runtime (`embedding.onnx`, all the
serve image has) and Keras (`embedding.keras`, where TensorFlow is installed; benchmarks compare the two).
Apart from simrec.recommender.package so that `simrec serve`'s options parse without numpy: the control
image's chart tests read them."""

RUNTIMES = ("onnx", "keras")
