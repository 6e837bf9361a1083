#!/bin/sh
# Runs versitygw with its root secret read from the Docker secret file (it
# reads the secret from a flag or ROOT_SECRET_KEY only), so that the
# secret is in no compose `environment:` entry and no image.
set -eu
ROOT_SECRET_KEY=$(cat /run/secrets/s3_root_secret_key)
export ROOT_SECRET_KEY
exec /usr/local/bin/versitygw "$@"
