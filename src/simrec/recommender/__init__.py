"""The recommender package (the folder evaluate builds, register versions and serving loads), its
MLflow pyfunc and the checks validate runs on that pyfunc."""
