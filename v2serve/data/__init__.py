"""Reading data named by URL through fsspec: request ``data_url`` under the operator's policy, and model
artifacts into a local cache."""
