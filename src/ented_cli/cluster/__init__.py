"""`ented restore --cluster`: the restore pipeline on a Ray cluster (Ray Data), for archives one
machine cannot restore in time. `connect.py` joins or starts the cluster, `shipping.py` is what
the driver sends (once per run, once per photo), `stages.py` the three worker stages around the
pipeline's own steps, `runner.py` the driver: plan, stream, collect. docs/cluster.md has the
measured speed and how to size a cluster. Ray is an optional extra: nothing here is imported
unless a run asks for a cluster."""
