import os

# Tests in the serve environment (images/serve): set before anything starts MLflow, as tests/conftest.py.
os.environ["MLFLOW_DISABLE_TELEMETRY"] = "true"
os.environ["SPARK_LOCAL_IP"] = "127.0.0.1"
