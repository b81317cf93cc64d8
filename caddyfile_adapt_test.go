package realtime

import (
	"bytes"
	"encoding/json"
	"flag"
	"os"
	"path/filepath"
	"strings"
	"testing"

	"github.com/caddyserver/caddy/v2/caddyconfig"
	_ "github.com/caddyserver/caddy/v2/modules/standard"
)

var updateGolden = flag.Bool("update", false, "rewrite the expected JSON or error of testdata/caddyfile_adapt/*.caddyfiletest")

// TestCaddyfileAdapt adapts every documented Caddyfile form, each a whole
// Caddyfile in testdata/caddyfile_adapt (as Caddy's own adapt tests do:
// the Caddyfile, a line of dashes, the JSON `caddy adapt` prints), and
// compares the JSON with the expected one. It shows where the directive
// lands among other handlers, which subdirectives become which fields, and
// that placeholders are kept for run time. A case whose expected part is
// a line "error: <message>" instead wants adapting to fail with exactly
// that message, which names the Caddyfile line. After an intended change:
// go test -run TestCaddyfileAdapt -update, then read the diff (-update
// keeps a case's kind: a JSON case that starts to fail, or an error case
// that starts to adapt, fails instead of being rewritten).
func TestCaddyfileAdapt(t *testing.T) {
	files, err := filepath.Glob("testdata/caddyfile_adapt/*.caddyfiletest")
	if err != nil || len(files) == 0 {
		t.Fatalf("no adapt tests found: %v", err)
	}
	const (
		sep       = "\n----------\n"
		errPrefix = "error: "
	)
	for _, file := range files {
		t.Run(strings.TrimSuffix(filepath.Base(file), ".caddyfiletest"), func(t *testing.T) {
			raw, err := os.ReadFile(file)
			if err != nil {
				t.Fatal(err)
			}
			input, want, ok := strings.Cut(string(raw), sep)
			if !ok {
				t.Fatalf("%s: no %q line between the Caddyfile and what adapting gives", file, strings.TrimSpace(sep))
			}
			out, warnings, err := caddyconfig.GetAdapter("caddyfile").Adapt([]byte(input+"\n"), nil)
			if wantErr, isErrCase := strings.CutPrefix(want, errPrefix); isErrCase {
				if err == nil {
					t.Fatalf("adapted without error, want %q", strings.TrimSpace(wantErr))
				}
				got := err.Error() + "\n"
				if *updateGolden {
					if err := os.WriteFile(file, []byte(input+sep+errPrefix+got), 0o644); err != nil {
						t.Fatal(err)
					}
					return
				}
				if got != wantErr {
					t.Errorf("adapting failed with\n%s\nwant\n%s", got, wantErr)
				}
				return
			}
			if err != nil {
				t.Fatalf("adapting: %v", err)
			}
			for _, w := range warnings {
				t.Errorf("warning: line %d: %s: %s", w.Line, w.Directive, w.Message)
			}
			var pretty bytes.Buffer
			if err := json.Indent(&pretty, out, "", "\t"); err != nil {
				t.Fatal(err)
			}
			got := pretty.String() + "\n"
			if *updateGolden {
				if err := os.WriteFile(file, []byte(input+sep+got), 0o644); err != nil {
					t.Fatal(err)
				}
				return
			}
			if got != want {
				t.Errorf("adapted JSON differs from %s (run with -update to rewrite it, then read the diff)\ngot:\n%s", file, got)
			}
		})
	}
}
