import os

# Set before anything starts MLflow or Spark, in every environment the suite runs in.
os.environ["MLFLOW_DISABLE_TELEMETRY"] = "true"
os.environ["SPARK_LOCAL_IP"] = "127.0.0.1"
