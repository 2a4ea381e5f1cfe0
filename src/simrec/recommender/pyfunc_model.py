"""MLflow "models from code" file: `simrec validate` passes this file's path as `python_model`, MLflow
copies it into the saved model and runs it on every load. It only names the model; the code lives in
simrec.recommender.pyfunc (installed in the serve image)."""

import mlflow

from simrec.recommender.pyfunc import RecommenderPyfunc

mlflow.models.set_model(RecommenderPyfunc())
