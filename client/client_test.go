package client

import (
	"bytes"
	"net/http"
	"net/http/httptest"
	"strconv"
	"strings"
	"testing"
)

func TestModuleDerivedFromScript(t *testing.T) {
	js, mjs := jsAsset.body, mjsAsset.body
	if !bytes.HasSuffix(js, []byte("window.Realtime = Realtime;\n")) {
		t.Fatalf("realtime.js does not end with the window assignment")
	}
	if !bytes.HasSuffix(mjs, []byte("\nexport { Realtime };\n")) {
		t.Fatalf("realtime.mjs does not end with the export")
	}
	if bytes.Contains(mjs, []byte("window.Realtime =")) {
		t.Fatalf("realtime.mjs still assigns window.Realtime")
	}
	body := js[:len(js)-len(scriptExport)]
	if !bytes.Equal(mjs[:len(body)], body) {
		t.Fatalf("realtime.mjs differs from realtime.js before the last line")
	}
	if jsAsset.etag == mjsAsset.etag {
		t.Fatalf("the two files share an ETag")
	}
}

func TestToModuleRejectsMissingMarker(t *testing.T) {
	for _, src := range []string{
		"var Realtime = 1;\n",
		"var Realtime = 1;\n" + scriptExport + "// trailing\n",
		scriptExport + scriptExport,
	} {
		func() {
			defer func() {
				if recover() == nil {
					t.Errorf("toModule(%q) did not panic", src)
				}
			}()
			toModule([]byte(src))
		}()
	}
}

func TestServe(t *testing.T) {
	tests := []struct {
		name        string
		method      string
		module      bool
		types       bool
		ifNoneMatch string
		wantStatus  int
		wantBody    []byte
	}{
		{name: "script", method: http.MethodGet, wantStatus: 200, wantBody: jsAsset.body},
		{name: "module", method: http.MethodGet, module: true, wantStatus: 200, wantBody: mjsAsset.body},
		{name: "head", method: http.MethodHead, wantStatus: 200, wantBody: nil},
		{name: "matching etag", method: http.MethodGet, ifNoneMatch: jsAsset.etag, wantStatus: 304},
		{name: "weak matching etag in a list", method: http.MethodGet, ifNoneMatch: `"x", W/` + jsAsset.etag, wantStatus: 304},
		{name: "star", method: http.MethodGet, ifNoneMatch: "*", wantStatus: 304},
		{name: "other file's etag", method: http.MethodGet, module: true, ifNoneMatch: jsAsset.etag, wantStatus: 200, wantBody: mjsAsset.body},
		{name: "stale etag", method: http.MethodGet, ifNoneMatch: `"old"`, wantStatus: 200, wantBody: jsAsset.body},
		{name: "types", method: http.MethodGet, types: true, wantStatus: 200, wantBody: dtsAsset.body},
		{name: "types head", method: http.MethodHead, types: true, wantStatus: 200, wantBody: nil},
		{name: "types matching etag", method: http.MethodGet, types: true, ifNoneMatch: dtsAsset.etag, wantStatus: 304},
		{name: "types with the script's etag", method: http.MethodGet, types: true, ifNoneMatch: jsAsset.etag, wantStatus: 200, wantBody: dtsAsset.body},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			r := httptest.NewRequest(tc.method, "/hub/realtime.js", nil)
			if tc.ifNoneMatch != "" {
				r.Header.Set("If-None-Match", tc.ifNoneMatch)
			}
			w := httptest.NewRecorder()
			if tc.types {
				ServeTypes(w, r)
			} else {
				Serve(w, r, tc.module)
			}
			res := w.Result()
			if res.StatusCode != tc.wantStatus {
				t.Fatalf("status %d, want %d", res.StatusCode, tc.wantStatus)
			}
			want, wantType := jsAsset.etag, "text/javascript; charset=utf-8"
			switch {
			case tc.module:
				want = mjsAsset.etag
			case tc.types:
				want, wantType = dtsAsset.etag, "application/typescript; charset=utf-8"
			}
			if got := res.Header.Get("ETag"); got != want {
				t.Errorf("ETag %q, want %q", got, want)
			}
			if got := res.Header.Get("Cache-Control"); got != "no-cache" {
				t.Errorf("Cache-Control %q, want no-cache", got)
			}
			if tc.wantStatus == 200 {
				if got := res.Header.Get("Content-Type"); got != wantType {
					t.Errorf("Content-Type %q, want %q", got, wantType)
				}
				if tc.types && tc.method == http.MethodHead {
					if got := res.Header.Get("Content-Length"); got != strconv.Itoa(len(dtsAsset.body)) {
						t.Errorf("HEAD Content-Length %q, want %d", got, len(dtsAsset.body))
					}
				}
			}
			if !bytes.Equal(w.Body.Bytes(), tc.wantBody) {
				t.Errorf("body of %d bytes, want %d", w.Body.Len(), len(tc.wantBody))
			}
		})
	}
}

func TestETagIsStrongAndQuoted(t *testing.T) {
	if !strings.HasPrefix(jsAsset.etag, `"`) || !strings.HasSuffix(jsAsset.etag, `"`) || strings.HasPrefix(jsAsset.etag, "W/") {
		t.Fatalf("ETag %q is not a strong quoted tag", jsAsset.etag)
	}
}

func TestTypesEmbedded(t *testing.T) {
	for _, want := range []string{"declare class Realtime", "interface Window", "declare module '*/realtime.mjs'"} {
		if !bytes.Contains(dtsAsset.body, []byte(want)) {
			t.Errorf("realtime.d.ts has no %q", want)
		}
	}
	if dtsAsset.etag == jsAsset.etag || dtsAsset.etag == mjsAsset.etag {
		t.Fatalf("realtime.d.ts shares an ETag with the client")
	}
}
