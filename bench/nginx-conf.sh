# Sourced by the bench scripts: the nginx configurations they share, so that
# every benchmark compares serin with the same nginx.

free_port() {
    python3 -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1",0)); print(s.getsockname()[1]); s.close()'
}

# opening DIR: what both configurations start with, up to the inside of
# their http block (files under DIR, no access log, long keep-alive).
opening() {
    local d=$1
    cat <<CONF
error_log $d/error.log warn; pid $d/nginx.pid;
events { worker_connections 4096; }
http {
    access_log off;
    client_body_temp_path $d/body; proxy_temp_path $d/proxy;
    fastcgi_temp_path $d/fcgi; uwsgi_temp_path $d/uwsgi; scgi_temp_path $d/scgi;
    keepalive_requests 1000000;
CONF
}

# upstream_conf DIR UP1 UP2: one nginx worker, two servers answering 200 "ok".
upstream_conf() {
    echo "worker_processes 1; daemon on;"
    opening "$1"
    cat <<CONF
    server { listen 127.0.0.1:$2; location / { return 200 "ok\n"; } }
    server { listen 127.0.0.1:$3; location / { return 200 "ok\n"; } }
}
CONF
}

# proxy_conf DIR PORT UP1 UP2 PROCESS-LINE: nginx as serin's peer. A 50/50
# split_clients on $request_id, upstream keepalive, and the request rewriting
# serin does (Host kept, X-Forwarded-For appended, X-Forwarded-Proto, Via).
# PROCESS-LINE says how nginx runs, e.g. "worker_processes 2; daemon on;".
proxy_conf() {
    echo "$5"
    opening "$1"
    cat <<CONF
    upstream stable { server 127.0.0.1:$3; keepalive 64; keepalive_requests 1000000; }
    upstream canary { server 127.0.0.1:$4; keepalive 64; keepalive_requests 1000000; }
    split_clients "\${request_id}" \$backend { 50% canary; * stable; }
    server {
        listen 127.0.0.1:$2;
        location / {
            proxy_pass http://\$backend;
            proxy_http_version 1.1;
            proxy_set_header Connection "";
            proxy_set_header Host \$host;
            proxy_set_header X-Forwarded-For \$proxy_add_x_forwarded_for;
            proxy_set_header X-Forwarded-Proto \$scheme;
            proxy_set_header Via "1.1 nginx";
        }
    }
}
CONF
}
