#!/bin/sh
# f2stream container entrypoint: hands the Docker secrets to the non-root
# user, then runs the command (CMD / compose `command:`) as that user.
#
# Compose bind-mounts file secrets with the host's owner and mode (0600,
# owned by whoever ran init-secrets.sh), and f2stream refuses a secret file
# that others can read. So, started as root (the image default), this copies
# every file named by an F2_*_FILE variable into a private folder owned by
# the run user, mode 0400, points the variable at the copy, and drops root
# with setpriv before exec. Started as any other user (docker run --user,
# Kubernetes runAsUser), it runs the command as it is.
set -eu

RUN_AS=${RUN_AS:-f2}
COPY_DIR=${SECRETS_COPY_DIR:-/run/f2stream-secrets}

if [ "$(id -u)" != 0 ]; then
    exec "$@"
fi

umask 077
mkdir -p "$COPY_DIR"
chown "$RUN_AS:" "$COPY_DIR"
chmod 0700 "$COPY_DIR"

for var in $(env | sed -n 's/^\(F2_[A-Z0-9_]*_FILE\)=.*$/\1/p'); do
    eval "src=\${$var}"
    [ -n "$src" ] || continue
    if [ ! -r "$src" ]; then
        echo "f2-entrypoint: $var=$src is missing (run deploy/compose/init-secrets.sh)" >&2
        exit 1
    fi
    copy="$COPY_DIR/$var"
    cp "$src" "$copy"
    chown "$RUN_AS:" "$copy"
    chmod 0400 "$copy"
    export "$var=$copy"
done

exec setpriv --reuid="$(id -u "$RUN_AS")" --regid="$(id -g "$RUN_AS")" --init-groups \
    --inh-caps=-all --bounding-set=-all --no-new-privs -- "$@"
