"""Everything simrec does with KServe, apart from the server it runs (simrec.serving):

manifest  the InferenceService that serves a registered version (the Helm chart renders the same object)
settings  the deploy step's serve.kserve settings and the namespace a pod runs in
api       get / create / replace / patch of InferenceServices through the Kubernetes API
rollout   roll_out and roll_back on a cluster (the deploy step's --kserve): a canary revision, watched until
          it serves or is rolled back
"""
