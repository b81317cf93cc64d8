package main

import (
	"context"
	"errors"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"time"
)

// Nchan on nginx: the reference the hub is compared with. Debian's nginx
// and libnginx-mod-nchan are installed when missing (BENCH_NO_INSTALL=1
// turns that off); if that fails the Nchan rows say "nchan unavailable".

var nchanModules = []string{
	"/usr/lib/nginx/modules/ngx_nchan_module.so",
	"/usr/lib64/nginx/modules/ngx_nchan_module.so",
}

func findNchan() (nginx, module string) {
	nginx, _ = exec.LookPath("nginx")
	if nginx == "" {
		for _, p := range []string{"/usr/sbin/nginx", "/sbin/nginx"} {
			if _, err := os.Stat(p); err == nil {
				nginx = p
			}
		}
	}
	for _, m := range nchanModules {
		if _, err := os.Stat(m); err == nil {
			module = m
			break
		}
	}
	return nginx, module
}

// ensureNchan returns the nginx binary and the Nchan module path, installing
// the Debian packages when missing.
func ensureNchan(ctx context.Context, logf func(string, ...any)) (string, string, error) {
	nginx, module := findNchan()
	if nginx != "" && module != "" {
		return nginx, module, nil
	}
	if os.Getenv("BENCH_NO_INSTALL") != "" {
		return "", "", errors.New("nginx/libnginx-mod-nchan missing and BENCH_NO_INSTALL is set")
	}
	if _, err := exec.LookPath("apt-get"); err != nil {
		return "", "", errors.New("nginx/libnginx-mod-nchan missing and no apt-get")
	}
	logf("installing nginx and libnginx-mod-nchan (Debian packages)...")
	ictx, cancel := context.WithTimeout(ctx, 5*time.Minute)
	defer cancel()
	sudo := []string{}
	if os.Geteuid() != 0 {
		sudo = []string{"sudo", "-n"}
	}
	run := func(args ...string) error {
		full := append(append([]string{}, sudo...), args...)
		c := exec.CommandContext(ictx, full[0], full[1:]...)
		c.Env = append(os.Environ(), "DEBIAN_FRONTEND=noninteractive")
		out, err := c.CombinedOutput()
		if err != nil {
			return fmt.Errorf("%v: %w: %s", args, err, tailString(string(out), 400))
		}
		return nil
	}
	if err := run("apt-get", "update", "-qq"); err != nil {
		return "", "", err
	}
	if err := run("apt-get", "install", "-y", "-qq", "--no-install-recommends", "nginx", "libnginx-mod-nchan"); err != nil {
		return "", "", err
	}
	nginx, module = findNchan()
	if nginx == "" || module == "" {
		return "", "", errors.New("nginx or the nchan module still missing after install")
	}
	return nginx, module, nil
}

func tailString(s string, n int) string {
	if len(s) > n {
		return "..." + s[len(s)-n:]
	}
	return s
}

type nginxServer struct {
	cmd     *exec.Cmd
	port    int
	tlsPort int // 0 without TLS
	log     string
}

// startNchan runs nginx in the foreground with one worker, Nchan publisher
// at /pub and subscriber at /sub, everything in dir, loopback only; with
// tlsf also on a TLS port (TLS 1.3, HTTP/2) with that certificate.
func startNchan(ctx context.Context, nginx, module, dir string, tlsf *tlsFiles) (*nginxServer, error) {
	port, err := freePort()
	if err != nil {
		return nil, err
	}
	tlsListen, tlsPort := "", 0
	if tlsf != nil {
		if tlsPort, err = freePort(); err != nil {
			return nil, err
		}
		// Debian's nginx 1.22 takes http2 on the listen line
		tlsListen = fmt.Sprintf("listen 127.0.0.1:%d ssl http2 backlog=4096;\n\t\tssl_certificate %s;\n\t\tssl_certificate_key %s;\n\t\tssl_protocols TLSv1.3;\n\t\tssl_session_tickets off;",
			tlsPort, tlsf.cert, tlsf.key)
	}
	nd := filepath.Join(dir, fmt.Sprintf("nginx-%d", port))
	for _, sub := range []string{"", "tmp", "logs"} {
		if err := os.MkdirAll(filepath.Join(nd, sub), 0o755); err != nil {
			return nil, err
		}
	}
	user := ""
	if os.Geteuid() == 0 {
		user = "user root;"
	}
	conf := fmt.Sprintf(`load_module %s;
%s
worker_processes 1;
worker_rlimit_nofile 20000;
daemon off;
pid %[3]s/nginx.pid;
error_log %[3]s/logs/error.log warn;
events {
	worker_connections 20000;
}
http {
	access_log off;
	client_body_temp_path %[3]s/tmp/body;
	proxy_temp_path %[3]s/tmp/proxy;
	fastcgi_temp_path %[3]s/tmp/fastcgi;
	uwsgi_temp_path %[3]s/tmp/uwsgi;
	scgi_temp_path %[3]s/tmp/scgi;
	keepalive_requests 1000000;
	server {
		listen 127.0.0.1:%[4]d backlog=4096;
		%[5]s
		location = /pub {
			nchan_publisher;
			nchan_channel_id $arg_channel;
			nchan_message_buffer_length 100;
		}
		location = /sub {
			nchan_subscriber;
			nchan_channel_id $arg_channel;
		}
	}
}
`, module, user, nd, port, tlsListen)
	confPath := filepath.Join(nd, "nginx.conf")
	if err := os.WriteFile(confPath, []byte(conf), 0o644); err != nil {
		return nil, err
	}
	logPath := filepath.Join(nd, "logs", "stderr.log")
	c, err := startChild(nginx, []string{"-p", nd, "-c", confPath, "-e", filepath.Join(nd, "logs", "error.log")}, nd, logPath)
	if err != nil {
		return nil, err
	}
	for _, p := range []int{port, tlsPort} {
		if p == 0 {
			continue
		}
		if err := waitPort(ctx, fmt.Sprintf("127.0.0.1:%d", p), c, 10*time.Second); err != nil {
			stopProc(c, 2*time.Second)
			return nil, fmt.Errorf("nginx: %w\n%s\n%s", err, tailFile(logPath, 10), tailFile(filepath.Join(nd, "logs", "error.log"), 10))
		}
	}
	return &nginxServer{cmd: c, port: port, tlsPort: tlsPort, log: filepath.Join(nd, "logs", "error.log")}, nil
}

func (s *nginxServer) stop() { stopProc(s.cmd, 5*time.Second) }
