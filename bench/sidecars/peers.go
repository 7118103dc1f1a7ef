package main

import (
	"bytes"
	"fmt"
	"text/template"
)

// backendBody is what every HTTP backend answers, whichever serves it.
const backendBody = "ok\n"

// peerConfig is what the nginx and HAProxy configurations are rendered
// from: one side of a sidecar pair, or the nginx backend.
type peerConfig struct {
	// Dir holds the pid file, error log and temp directories.
	Dir string
	// Name tells the instances apart in file names.
	Name string
	// Listen is the port the instance accepts on, on 127.0.0.1.
	Listen int
	// Peer is the server side's port, for the client side.
	Peer int
	// Backend is the app's port, for the server side.
	Backend int
	// Workers is nginx's worker_processes, HAProxy's nbthread.
	Workers int
	Certs   certFiles
	// ServerName is the name the client side verifies.
	ServerName string
	Body       string
}

// nginxCommon is the part every nginx instance shares: one worker per
// instance as a sidecar gets, no access log (Rampart's proxy keeps
// metrics, not a log line per request), and keep-alive connections that
// live as long as the benchmark so that no run pays for reconnecting.
const nginxCommon = `# Written by bench/sidecars: {{.Name}}.
daemon off;
master_process on;
worker_processes {{.Workers}};
worker_rlimit_nofile 10240;
pid {{.Dir}}/{{.Name}}.pid;
error_log {{.Dir}}/{{.Name}}.error.log warn;

events {
    worker_connections 4096;
}

http {
    access_log off;
    server_tokens off;
    keepalive_requests 1000000;
    keepalive_timeout 300s;
    client_body_temp_path {{.Dir}}/{{.Name}}-tmp/body;
    proxy_temp_path {{.Dir}}/{{.Name}}-tmp/proxy;
    fastcgi_temp_path {{.Dir}}/{{.Name}}-tmp/fastcgi;
    uwsgi_temp_path {{.Dir}}/{{.Name}}-tmp/uwsgi;
    scgi_temp_path {{.Dir}}/{{.Name}}-tmp/scgi;
`

var nginxTemplates = template.Must(template.New("nginx").Parse(`
{{define "backend"}}` + nginxCommon + `
    server {
        listen 127.0.0.1:{{.Listen}} backlog=4096;
        location / {
            default_type text/plain;
            return 200 {{printf "%q" .Body}};
        }
    }
}
{{end}}

{{define "client"}}` + nginxCommon + `
    # The server side, over TLS 1.3 with this side's client certificate;
    # idle connections are kept for reuse.
    upstream mesh_peer {
        server 127.0.0.1:{{.Peer}};
        keepalive 64;
        keepalive_requests 1000000;
        keepalive_timeout 300s;
    }

    server {
        listen 127.0.0.1:{{.Listen}} backlog=4096;
        location / {
            proxy_pass https://mesh_peer;
            proxy_http_version 1.1;
            proxy_set_header Connection "";
            proxy_ssl_protocols TLSv1.3;
            proxy_ssl_certificate {{.Certs.ClientCert}};
            proxy_ssl_certificate_key {{.Certs.ClientKey}};
            proxy_ssl_trusted_certificate {{.Certs.CA}};
            proxy_ssl_verify on;
            proxy_ssl_verify_depth 2;
            proxy_ssl_name {{.ServerName}};
            proxy_ssl_server_name on;
            proxy_ssl_session_reuse on;
        }
    }
}
{{end}}

{{define "server"}}` + nginxCommon + `
    upstream app {
        server 127.0.0.1:{{.Backend}};
        keepalive 64;
        keepalive_requests 1000000;
        keepalive_timeout 300s;
    }

    # Accepts only clients with a certificate from the mesh's CA.
    server {
        listen 127.0.0.1:{{.Listen}} ssl backlog=4096;
        ssl_protocols TLSv1.3;
        ssl_certificate {{.Certs.ServerCert}};
        ssl_certificate_key {{.Certs.ServerKey}};
        ssl_client_certificate {{.Certs.CA}};
        ssl_verify_client on;
        ssl_verify_depth 2;
        ssl_session_cache shared:{{.Name}}:1m;
        location / {
            proxy_pass http://app;
            proxy_http_version 1.1;
            proxy_set_header Connection "";
        }
    }
}
{{end}}
`))

// haproxyCommon is the part both HAProxy instances share: nbthread as a
// sidecar gets, HTTP mode with keep-alive both ways, no logging.
const haproxyCommon = `# Written by bench/sidecars: {{.Name}}.
global
    nbthread {{.Workers}}
    maxconn 4096
    ssl-default-bind-options ssl-min-ver TLSv1.3
    ssl-default-server-options ssl-min-ver TLSv1.3

defaults
    mode http
    timeout connect 5s
    timeout client 300s
    timeout server 300s
    timeout http-keep-alive 300s
    option http-keep-alive
    http-reuse always
`

var haproxyTemplates = template.Must(template.New("haproxy").Parse(`
{{define "client"}}` + haproxyCommon + `
frontend app_in
    bind 127.0.0.1:{{.Listen}}
    default_backend mesh_peer

# The server side, over TLS 1.3 with this side's client certificate.
backend mesh_peer
    server peer 127.0.0.1:{{.Peer}} ssl crt {{.Certs.ClientPEM}} ca-file {{.Certs.CA}} verify required verifyhost {{.ServerName}} sni str({{.ServerName}}) alpn http/1.1
{{end}}

{{define "server"}}` + haproxyCommon + `
# Accepts only clients with a certificate from the mesh's CA.
frontend mesh_in
    bind 127.0.0.1:{{.Listen}} ssl crt {{.Certs.ServerPEM}} ca-file {{.Certs.CA}} verify required alpn http/1.1
    default_backend app

backend app
    server app 127.0.0.1:{{.Backend}}
{{end}}
`))

// renderNginx renders the nginx configuration for role "backend", "client"
// or "server".
func renderNginx(role string, c peerConfig) ([]byte, error) {
	return render(nginxTemplates, "nginx", role, c)
}

// renderHAProxy renders the HAProxy configuration for role "client" or
// "server".
func renderHAProxy(role string, c peerConfig) ([]byte, error) {
	return render(haproxyTemplates, "haproxy", role, c)
}

func render(t *template.Template, what, role string, c peerConfig) ([]byte, error) {
	if t.Lookup(role) == nil {
		return nil, fmt.Errorf("%s: no configuration for role %q", what, role)
	}
	if c.Workers < 1 {
		return nil, fmt.Errorf("%s %s: %d workers", what, c.Name, c.Workers)
	}
	var b bytes.Buffer
	if err := t.ExecuteTemplate(&b, role, c); err != nil {
		return nil, fmt.Errorf("%s %s: %w", what, c.Name, err)
	}
	return bytes.TrimLeft(b.Bytes(), "\n"), nil
}
