// Package client holds realtime.js, the hub's browser client, and serves
// it: as a classic script (realtime.js, which defines window.Realtime) and
// as an ES module (realtime.mjs, which exports Realtime), with its
// TypeScript declarations (realtime.d.ts) beside them.
//
// realtime.js is the one source: the module is the same text with its
// last line, the window assignment, replaced by an export statement.
package client

import (
	"bytes"
	"crypto/sha256"
	_ "embed"
	"encoding/hex"
	"net/http"
	"strconv"
	"strings"
)

//go:embed realtime.js
var script []byte

// types declares the API of realtime.js, for both of its forms.
//
//go:embed realtime.d.ts
var types []byte

// scriptExport is the line of realtime.js that makes it a classic script;
// moduleExport replaces it in realtime.mjs.
const (
	scriptExport = "if (typeof window !== 'undefined') window.Realtime = Realtime;\n"
	moduleExport = "export { Realtime };\n"
)

type asset struct {
	body []byte
	etag string
}

var (
	jsAsset  = newAsset(script)
	mjsAsset = newAsset(toModule(script))
	dtsAsset = newAsset(types)
)

const (
	jsType  = "text/javascript; charset=utf-8"
	dtsType = "application/typescript; charset=utf-8"
)

// toModule derives realtime.mjs from realtime.js. It panics if realtime.js
// does not end with the window assignment (a test keeps it so).
func toModule(js []byte) []byte {
	if bytes.Count(js, []byte(scriptExport)) != 1 || !bytes.HasSuffix(js, []byte(scriptExport)) {
		panic("client: realtime.js must end with the line " + strings.TrimSpace(scriptExport))
	}
	out := make([]byte, 0, len(js)-len(scriptExport)+len(moduleExport))
	out = append(out, js[:len(js)-len(scriptExport)]...)
	return append(out, moduleExport...)
}

func newAsset(b []byte) asset {
	sum := sha256.Sum256(b)
	return asset{body: b, etag: `"` + hex.EncodeToString(sum[:12]) + `"`}
}

// Serve writes realtime.js (or, with module, realtime.mjs) as the answer
// to r: Content-Type text/javascript, a strong ETag, Cache-Control
// no-cache (so browsers revalidate and pick up upgrades), and 304 Not
// Modified for a matching If-None-Match. HEAD gets the headers only.
func Serve(w http.ResponseWriter, r *http.Request, module bool) {
	if module {
		serve(w, r, mjsAsset, jsType)
		return
	}
	serve(w, r, jsAsset, jsType)
}

// ServeTypes writes realtime.d.ts, the TypeScript declarations of the
// client, as Serve writes the client: Content-Type
// application/typescript, a strong ETag, Cache-Control no-cache, 304 for
// a matching If-None-Match, headers only for HEAD.
func ServeTypes(w http.ResponseWriter, r *http.Request) {
	serve(w, r, dtsAsset, dtsType)
}

func serve(w http.ResponseWriter, r *http.Request, a asset, contentType string) {
	h := w.Header()
	h.Set("Content-Type", contentType)
	h.Set("Cache-Control", "no-cache")
	h.Set("ETag", a.etag)
	h.Set("X-Content-Type-Options", "nosniff")
	if etagMatches(r.Header.Values("If-None-Match"), a.etag) {
		h.Del("Content-Type")
		w.WriteHeader(http.StatusNotModified)
		return
	}
	h.Set("Content-Length", strconv.Itoa(len(a.body)))
	w.WriteHeader(http.StatusOK)
	if r.Method != http.MethodHead {
		_, _ = w.Write(a.body)
	}
}

// etagMatches reports whether an If-None-Match header lists etag (weak
// comparison, as RFC 9110 asks for If-None-Match) or is "*".
func etagMatches(values []string, etag string) bool {
	for _, v := range values {
		for _, part := range strings.Split(v, ",") {
			part = strings.TrimSpace(part)
			if part == "*" || strings.TrimPrefix(part, "W/") == etag {
				return true
			}
		}
	}
	return false
}
