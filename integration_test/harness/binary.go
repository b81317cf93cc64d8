// Package harness runs a real Caddy built from this repository, and real
// upstreams on loopback, for the project's integration tests.
//
// A test starts its own Caddy with StartCaddy, from a Caddyfile template
// whose ports the harness fills in, and talks to it with the clients of
// HTTP1Client and HTTP2Client. The upstreams (NewSSEUpstream,
// NewFastCGIUpstream, NewWSEchoUpstream) are real servers whose test
// decides what they write and when. Every wait is bounded and fails the
// test with a message that says what did not happen.
package harness

import (
	"context"
	"crypto/sha256"
	"encoding/hex"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"sync"
	"testing"
	"time"
)

// EnvBinary names the environment variable that points at a Caddy binary
// built beforehand (`make test` builds one for every package); when it is
// unset, Binary builds ./cmd/caddy itself.
const EnvBinary = "REALTIME_CADDY_BIN"

// buildTimeout bounds `go build ./cmd/caddy` (about a minute cold).
const buildTimeout = 5 * time.Minute

var (
	binaryOnce sync.Once
	binaryPath string
	binaryErr  error
)

// Binary returns the path of a Caddy binary with this module: the one
// named by $REALTIME_CADDY_BIN, or one built from ./cmd/caddy once per
// test process. A failed build fails every test that asks for it.
func Binary(t testing.TB) string {
	t.Helper()
	binaryOnce.Do(func() { binaryPath, binaryErr = findOrBuild() })
	if binaryErr != nil {
		t.Fatalf("caddy binary: %v", binaryErr)
	}
	return binaryPath
}

func findOrBuild() (string, error) {
	if p := os.Getenv(EnvBinary); p != "" {
		abs, err := filepath.Abs(p)
		if err != nil {
			return "", err
		}
		if _, err := os.Stat(abs); err != nil {
			return "", fmt.Errorf("$%s: %w", EnvBinary, err)
		}
		return abs, nil
	}
	root, err := moduleRoot()
	if err != nil {
		return "", err
	}
	// One binary per checkout, overwritten by each test process: the go
	// build cache makes a rebuild cheap, and nothing piles up in /tmp.
	sum := sha256.Sum256([]byte(root))
	dir := filepath.Join(os.TempDir(), fmt.Sprintf("caddy-realtime-test-%d", os.Getuid()), hex.EncodeToString(sum[:6]))
	if err := os.MkdirAll(dir, 0o755); err != nil {
		return "", err
	}
	tmp, err := os.CreateTemp(dir, "caddy-build-*")
	if err != nil {
		return "", err
	}
	_ = tmp.Close()
	defer os.Remove(tmp.Name())
	ctx, cancel := context.WithTimeout(context.Background(), buildTimeout)
	defer cancel()
	cmd := exec.CommandContext(ctx, "go", "build", "-o", tmp.Name(), "./cmd/caddy")
	cmd.Dir = root
	out, err := cmd.CombinedOutput()
	if err != nil {
		return "", fmt.Errorf("go build ./cmd/caddy in %s: %w\n%s", root, err, out)
	}
	// rename is atomic: a package test running the previous binary keeps it
	final := filepath.Join(dir, "caddy")
	if err := os.Rename(tmp.Name(), final); err != nil {
		return "", err
	}
	return final, nil
}

// moduleRoot is the directory of the go.mod of the package under test.
func moduleRoot() (string, error) {
	out, err := exec.Command("go", "env", "GOMOD").Output()
	if err != nil {
		return "", fmt.Errorf("go env GOMOD: %w", err)
	}
	gomod := strings.TrimSpace(string(out))
	if gomod == "" || gomod == os.DevNull {
		return "", fmt.Errorf("not inside a Go module")
	}
	return filepath.Dir(gomod), nil
}
