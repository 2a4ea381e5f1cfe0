"""Everything simrec does with KServe, apart from the server it runs (simrec.serving):

manifest  the InferenceService that serves a registered version (the Helm chart renders the same object)
rollout   deploy and rollback on a cluster: a canary revision, watched until it serves or is rolled back
"""
