package integration_test

import (
	"context"
	"fmt"
	"net/http"
	"net/url"
	"strings"
	"testing"
	"time"

	"github.com/caddy-realtime/realtime/internal/testredis"
)

// Hostile clients: a client churning through fresh channel names leaves
// at most idle_channels of them behind on the node (and subscribed in
// Redis), the longest idle dropped first; a client resuming on a dropped
// channel gets the reset signal (expired); and a legitimate subscriber
// keeps getting its messages meanwhile. (That a subscribe costs the same
// however many channels the node holds is measured by `make bench`'s
// churn load and BenchmarkRedisChurn.)
func TestChurnLeavesBoundedChannels(t *testing.T) {
	t.Parallel()
	const idle = 50
	rs := testredis.Start(t)
	rdb := rs.Client()
	ctx := context.Background()
	c := startAuthSite(t, authConfig{Hub: fmt.Sprintf("redis %s\n\t\tpublish_key k\n\t\tlimits {\n\t\t\tidle_channels %d\n\t\t}", rs.URL(), idle)}).c
	legit := subscribe(t, c, "/hub?channel=legit", sseHeader())

	// the first channel gets a message (pub/sub: only the node's replay
	// cache keeps it), and its subscriber leaves
	first := subscribe(t, c, "/hub?channel=first", sseHeader())
	if err := rdb.Publish(ctx, "realtime:first", "m1").Err(); err != nil {
		t.Fatal(err)
	}
	m1 := first.NextEvent(t, authWait)
	first.Close()

	// 20 subscriptions of 20 fresh channels each, closed once live
	const rounds, width = 20, 20
	for i := range rounds {
		q := url.Values{}
		for j := range width {
			q.Add("channel", fmt.Sprintf("churn-%d-%d", i, j))
		}
		subscribe(t, c, "/hub?"+q.Encode(), sseHeader()).Close()
		expect(t, "publish to the legitimate channel", do(t, "POST", c.URL("/hub?channel=legit"), http.Header{"Authorization": {"Bearer k"}}, fmt.Sprint(i)), 200, "")
		if ev := legit.NextEvent(t, authWait); ev.Data != fmt.Sprint(i) {
			t.Fatalf("the legitimate subscriber got %+v during the churn, want %d", ev, i)
		}
	}

	// the node keeps idle_channels idle ones subscribed in Redis, plus
	// legit (the last ones leave a moment after their client)
	deadline := time.Now().Add(authWait)
	for {
		all, err := rdb.PubSubChannels(ctx, "realtime:*").Result()
		if err != nil {
			t.Fatal(err)
		}
		var chans []string // without the nodes' control channel, realtime:#control
		for _, ch := range all {
			if !strings.Contains(ch, "#") {
				chans = append(chans, ch)
			}
		}
		if len(chans) <= idle+1 {
			break
		}
		if time.Now().After(deadline) {
			t.Fatalf("%d channels subscribed in Redis after %d fresh ones, want at most %d", len(chans), rounds*width+1, idle+1)
		}
		time.Sleep(20 * time.Millisecond)
	}

	// the first channel was dropped: resuming on it is a reset (expired)
	again := subscribe(t, c, "/hub?channel=first&last_event_id="+url.QueryEscape(m1.ID), sseHeader())
	ev := again.NextEvent(t, authWait)
	if ev.Event != "realtime.reset" || !strings.Contains(ev.Data, "expired") {
		t.Fatalf("resuming on a dropped channel: got %+v, want realtime.reset (expired)", ev)
	}
}
