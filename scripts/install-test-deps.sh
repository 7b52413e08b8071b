#!/usr/bin/env bash
# Installs what serin's tests need from Debian's packages: nginx and wrk (proxy
# tests and benchmark), prometheus (metric-source tests), chromium (screenshots
# of the report and dashboard), tmux (the progress bar as a person sees it),
# curl (the API examples of docs/, run by docs_commands.rs), kubectl (the
# Rollout resource against kubesim, rollout_resource.rs; Debian's package is
# kubernetes-client), lua5.1 (the Argo CD health check of docs/kubernetes.md,
# k8s_gitops.rs; Argo CD's Lua is 5.1).
# Packages already present are left alone, so a second run costs nothing.
set -euo pipefail

need=()
command -v nginx >/dev/null 2>&1 || need+=(nginx)
command -v wrk >/dev/null 2>&1 || need+=(wrk)
command -v prometheus >/dev/null 2>&1 || need+=(prometheus)
command -v tmux >/dev/null 2>&1 || need+=(tmux)
command -v chromium >/dev/null 2>&1 || need+=(chromium)
command -v curl >/dev/null 2>&1 || need+=(curl)
command -v kubectl >/dev/null 2>&1 || need+=(kubernetes-client)
command -v lua5.1 >/dev/null 2>&1 || need+=(lua5.1)
[ ${#need[@]} -eq 0 ] && exit 0

SUDO=""
[ "$(id -u)" -eq 0 ] || SUDO="sudo"
# Debian's packages start their services on install (nginx on :80, prometheus
# on :9090). The tests start their own servers on free ports, so forbid that.
if [ ! -e /usr/sbin/policy-rc.d ]; then
  printf '#!/bin/sh\nexit 101\n' | $SUDO tee /usr/sbin/policy-rc.d >/dev/null
  $SUDO chmod +x /usr/sbin/policy-rc.d
  trap '$SUDO rm -f /usr/sbin/policy-rc.d' EXIT
fi
export DEBIAN_FRONTEND=noninteractive
$SUDO apt-get update -qq
$SUDO apt-get install -y -qq --no-install-recommends "${need[@]}" >/dev/null
