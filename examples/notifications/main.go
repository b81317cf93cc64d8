// Command notifications is the app of the notifications example: it logs
// users in with a cookie, serves the page, and answers the hub's
// authorize calls with a claim on one channel only, the user's own
// user:<name>. Backends send a user a notification by publishing to that
// channel; no user can subscribe to another's.
//
//	go run ./examples/notifications [-addr 127.0.0.1:9083]
//
// Endpoints (Caddy proxies all but /internal/ to it):
//
//	GET  /                     the page
//	POST /login?name=alice     sets the login cookie (a form post works too)
//	POST /logout               clears it
//	GET  /me                   {"name": "alice", "channel": "user:alice"},
//	                           or 204 when nobody is logged in
//	POST /internal/authorize   for Caddy only: the ticket claims, or 401
package main

import (
	"crypto/hmac"
	"crypto/rand"
	"crypto/sha256"
	_ "embed"
	"encoding/base64"
	"encoding/json"
	"flag"
	"log"
	"net/http"
	"regexp"
	"strings"
	"time"
)

//go:embed index.html
var page []byte

// cookieName is the login cookie: "<name>.<base64url HMAC of name>".
const cookieName = "notify_user"

// validName keeps names short and valid inside channel names.
var validName = regexp.MustCompile(`^[A-Za-z0-9_-]{1,32}$`)

// key signs the login cookies; a new one on every start logs everyone
// out, which is fine for an example.
var key = func() []byte {
	k := make([]byte, 32)
	if _, err := rand.Read(k); err != nil {
		log.Fatal(err)
	}
	return k
}()

func sign(name string) string {
	m := hmac.New(sha256.New, key)
	m.Write([]byte(name))
	return name + "." + base64.RawURLEncoding.EncodeToString(m.Sum(nil))
}

// user returns the logged-in user's name, or "" when the request has no
// valid login cookie.
func user(r *http.Request) string {
	c, err := r.Cookie(cookieName)
	if err != nil {
		return ""
	}
	name, _, ok := strings.Cut(c.Value, ".")
	if !ok || !validName.MatchString(name) || !hmac.Equal([]byte(c.Value), []byte(sign(name))) {
		return ""
	}
	return name
}

// channel is the private channel of a user.
func channel(name string) string { return "user:" + name }

func writeJSON(w http.ResponseWriter, status int, v any) {
	w.Header().Set("Content-Type", "application/json")
	w.Header().Set("Cache-Control", "no-store")
	w.WriteHeader(status)
	_ = json.NewEncoder(w).Encode(v)
}

func main() {
	addr := flag.String("addr", "127.0.0.1:9083", "listen address (keep it on loopback: Caddy is the front door)")
	flag.Parse()

	mux := http.NewServeMux()
	mux.HandleFunc("GET /{$}", func(w http.ResponseWriter, r *http.Request) {
		w.Header().Set("Content-Type", "text/html; charset=utf-8")
		_, _ = w.Write(page)
	})
	mux.HandleFunc("POST /login", func(w http.ResponseWriter, r *http.Request) {
		name := r.FormValue("name") // ?name= or a form field
		if !validName.MatchString(name) {
			http.Error(w, "name: 1 to 32 of A-Z a-z 0-9 _ -", http.StatusBadRequest)
			return
		}
		http.SetCookie(w, &http.Cookie{
			Name: cookieName, Value: sign(name), Path: "/",
			HttpOnly: true, SameSite: http.SameSiteLaxMode, MaxAge: int((24 * time.Hour).Seconds()),
		})
		http.Redirect(w, r, "/", http.StatusSeeOther)
	})
	mux.HandleFunc("POST /logout", func(w http.ResponseWriter, r *http.Request) {
		http.SetCookie(w, &http.Cookie{Name: cookieName, Path: "/", MaxAge: -1})
		http.Redirect(w, r, "/", http.StatusSeeOther)
	})
	mux.HandleFunc("GET /me", func(w http.ResponseWriter, r *http.Request) {
		name := user(r)
		if name == "" {
			// not an error: the page asks to know whether to show its
			// login form (a 4xx would be an error in the browser console)
			w.Header().Set("Cache-Control", "no-store")
			w.WriteHeader(http.StatusNoContent)
			return
		}
		writeJSON(w, http.StatusOK, map[string]string{"name": name, "channel": channel(name)})
	})
	// The hub calls this (POST, with the browser's Cookie header and a
	// body {"channels": [...]}) before it issues a ticket at /hub/ticket,
	// and for a subscription that comes with the cookie but no ticket.
	// The claims name the user's own channel only: the hub refuses any
	// other with 403. No "publish": pages only listen.
	mux.HandleFunc("POST /internal/authorize", func(w http.ResponseWriter, r *http.Request) {
		name := user(r)
		if name == "" {
			writeJSON(w, http.StatusUnauthorized, map[string]string{"reason": "not logged in"})
			return
		}
		writeJSON(w, http.StatusOK, map[string]any{
			"sub":      name,
			"channels": []string{channel(name)},
		})
	})

	srv := &http.Server{Addr: *addr, Handler: mux, ReadHeaderTimeout: 10 * time.Second}
	log.Printf("notifications app listening on http://%s", *addr)
	log.Fatal(srv.ListenAndServe())
}
