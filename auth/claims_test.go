package auth

import (
	"net/http"
	"testing"
)

var globTests = []struct {
	pattern, name string
	want          bool
}{
	{"news", "news", true},
	{"news", "news2", false},
	{"news", "new", false},
	{"*", "anything:at/all", true},
	{"*", "", true},
	{"chat:*", "chat:room-1", true},
	{"chat:*", "chat:", true},
	{"chat:*", "chat", false},
	{"chat:*", "xchat:1", false},
	{"*:admin", "team:admin", true},
	{"*:admin", "team:admins", false},
	{"a*b*c", "aXXbYYc", true},
	{"a*b*c", "abc", true},
	{"a*b*c", "acb", false},
	{"a**b", "ab", true},
	{"user/*/inbox", "user/42/inbox", true},
	{"user/*/inbox", "user/42/outbox", false},
	{"*a*a*a*a*b", "aaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaa", false},
	{"", "", true},
	{"", "x", false},
}

func TestGlob(t *testing.T) {
	for _, tc := range globTests {
		if got := Glob(tc.pattern, tc.name); got != tc.want {
			t.Errorf("Glob(%q, %q) = %v, want %v", tc.pattern, tc.name, got, tc.want)
		}
	}
}

func TestClaims(t *testing.T) {
	c := &Claims{Sub: "user-42", Channels: []string{"news", "chat:*"}, Publish: []string{"chat:*"}}
	tests := []struct {
		ch           string
		sub, publish bool
	}{
		{"news", true, false},
		{"chat:1", true, true},
		{"sports", false, false},
	}
	for _, tc := range tests {
		if got := c.CanSubscribe(tc.ch); got != tc.sub {
			t.Errorf("CanSubscribe(%q) = %v", tc.ch, got)
		}
		if got := c.CanPublish(tc.ch); got != tc.publish {
			t.Errorf("CanPublish(%q) = %v", tc.ch, got)
		}
		if err := c.CheckPublish(tc.ch); (err == nil) != tc.publish {
			t.Errorf("CheckPublish(%q) = %v", tc.ch, err)
		}
	}
	if err := c.Cover([]string{"news", "chat:a"}); err != nil {
		t.Errorf("Cover: %v", err)
	}
	err := c.Cover([]string{"news", "sports"})
	e := asError(t, err)
	if e.Status != http.StatusForbidden || e.Kind != KindScope || e.Reason != `ticket does not cover channel "sports"` {
		t.Errorf("Cover error = %+v", e)
	}
	var empty Claims
	if empty.CanSubscribe("news") || empty.CanPublish("news") {
		t.Error("empty claims grant something")
	}
	var nilc *Claims
	if nilc.CanSubscribe("news") || nilc.CanPublish("news") || nilc.Cover([]string{"x"}) == nil {
		t.Error("nil claims grant something")
	}
}

var claimsJSONTests = []struct {
	name string
	in   string
	ok   bool
	want Claims
}{
	{"full", `{"sub":"user-42","channels":["news","chat:*"],"publish":["chat:*"]}`, true,
		Claims{Sub: "user-42", Channels: []string{"news", "chat:*"}, Publish: []string{"chat:*"}}},
	{"extra fields", ` {"sub":"u","exp":123,"channels":["a"]} `, true, Claims{Sub: "u", Channels: []string{"a"}}},
	{"empty object", `{}`, true, Claims{}},
	{"null", `null`, false, Claims{}},
	{"array", `["news"]`, false, Claims{}},
	{"string channels", `{"channels":"news"}`, false, Claims{}},
	{"number in channels", `{"channels":[1]}`, false, Claims{}},
	{"truncated", `{"channels":["news"`, false, Claims{}},
	{"empty", ``, false, Claims{}},
	{"trailing garbage", `{} x`, false, Claims{}},
}

func TestParseClaims(t *testing.T) {
	for _, tc := range claimsJSONTests {
		t.Run(tc.name, func(t *testing.T) {
			c, err := parseClaims([]byte(tc.in))
			if (err == nil) != tc.ok {
				t.Fatalf("parseClaims(%q) error = %v, want ok %v", tc.in, err, tc.ok)
			}
			if !tc.ok {
				return
			}
			if c.Sub != tc.want.Sub || !equalStrings(c.Channels, tc.want.Channels) || !equalStrings(c.Publish, tc.want.Publish) {
				t.Errorf("parseClaims(%q) = %+v, want %+v", tc.in, c, tc.want)
			}
		})
	}
}

func equalStrings(a, b []string) bool {
	if len(a) != len(b) {
		return false
	}
	for i := range a {
		if a[i] != b[i] {
			return false
		}
	}
	return true
}
