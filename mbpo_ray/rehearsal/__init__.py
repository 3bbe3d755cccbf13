"""`mbpo-ray cluster rehearse`: a cloud launch rehearsed on one machine (docs/clusters.md,
"Before your first `ray up`"). ``local_s3``: an S3 server on 127.0.0.1 for bucket storage;
``fake_cluster``: a local Ray cluster whose autoscaler adds the cluster file's node types;
``command``: the steps and their verdicts."""
