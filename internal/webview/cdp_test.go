package webview

import (
	"bufio"
	"context"
	"encoding/json"
	"fmt"
	"os"
	"os/exec"
	"regexp"
	"sync"
	"syscall"
	"testing"
	"time"

	"github.com/coder/websocket"
)

// chromiumFlags start Debian's chromium headless on a machine without a
// network: no sandbox (root), no GPU, and nothing that phones home.
var chromiumFlags = []string{
	"--headless", "--no-sandbox", "--disable-gpu", "--disable-quic", "--no-first-run",
	"--disable-background-networking", "--disable-component-update", "--disable-sync",
	"--disable-extensions", "--disable-dev-shm-usage", "--hide-scrollbars",
}

// browser is a headless chromium driven over the DevTools protocol (one
// page, flat session), just enough to load a page, evaluate JavaScript and
// take a screenshot.
type browser struct {
	cmd     *exec.Cmd
	ws      *websocket.Conn
	session string

	mu      sync.Mutex
	next    int
	waiting map[int]chan cdpReply
}

type cdpReply struct {
	Result json.RawMessage `json:"result"`
	Error  *struct {
		Message string `json:"message"`
	} `json:"error"`
}

var devtoolsURL = regexp.MustCompile(`DevTools listening on (ws://\S+)`)

// startBrowser starts chromium (path) with a fresh profile and opens url
// in a page of width x height pixels.
func startBrowser(t *testing.T, path, url string, width, height int) *browser {
	t.Helper()
	ctx := t.Context()
	args := append([]string{}, chromiumFlags...)
	args = append(args, "--user-data-dir="+t.TempDir(), "--remote-debugging-port=0",
		fmt.Sprintf("--window-size=%d,%d", width, height), "about:blank")
	cmd := exec.Command(path, args...)
	cmd.SysProcAttr = &syscall.SysProcAttr{Setpgid: true} // its helpers die with it
	stderr, err := cmd.StderrPipe()
	if err != nil {
		t.Fatal(err)
	}
	if err := cmd.Start(); err != nil {
		t.Fatalf("start %s: %v", path, err)
	}
	b := &browser{cmd: cmd, waiting: map[int]chan cdpReply{}}
	t.Cleanup(b.close)
	found := make(chan string, 1)
	var logTail []string
	go func() {
		sc := bufio.NewScanner(stderr)
		for sc.Scan() {
			if m := devtoolsURL.FindStringSubmatch(sc.Text()); m != nil {
				found <- m[1]
			} else if len(logTail) < 20 {
				logTail = append(logTail, sc.Text())
			}
		}
		close(found)
	}()
	var wsURL string
	select {
	case u, ok := <-found:
		if !ok {
			t.Fatalf("chromium exited without a DevTools endpoint: %q", logTail)
		}
		wsURL = u
	case <-time.After(30 * time.Second):
		t.Fatalf("chromium did not start within 30 s: %q", logTail)
	}
	b.ws, _, err = websocket.Dial(ctx, wsURL, nil)
	if err != nil {
		t.Fatalf("dial DevTools %s: %v", wsURL, err)
	}
	b.ws.SetReadLimit(64 << 20) // screenshots
	go b.readLoop()
	var target struct{ TargetID string }
	b.call(t, "", "Target.createTarget", map[string]any{"url": "about:blank"}, &target)
	var attach struct{ SessionID string }
	b.call(t, "", "Target.attachToTarget", map[string]any{"targetId": target.TargetID, "flatten": true}, &attach)
	b.session = attach.SessionID
	b.call(t, b.session, "Emulation.setDeviceMetricsOverride",
		map[string]any{"width": width, "height": height, "deviceScaleFactor": 1, "mobile": false}, nil)
	b.call(t, b.session, "Page.navigate", map[string]any{"url": url}, nil)
	return b
}

func (b *browser) readLoop() {
	for {
		_, data, err := b.ws.Read(context.Background())
		if err != nil {
			b.mu.Lock()
			for id, ch := range b.waiting {
				close(ch)
				delete(b.waiting, id)
			}
			b.mu.Unlock()
			return
		}
		var m struct {
			ID int `json:"id"`
			cdpReply
		}
		if json.Unmarshal(data, &m) != nil || m.ID == 0 {
			continue // an event
		}
		b.mu.Lock()
		ch := b.waiting[m.ID]
		delete(b.waiting, m.ID)
		b.mu.Unlock()
		if ch != nil {
			ch <- m.cdpReply
		}
	}
}

// call sends one DevTools command and decodes its result into out.
func (b *browser) call(t *testing.T, session, method string, params any, out any) {
	t.Helper()
	b.mu.Lock()
	b.next++
	id := b.next
	ch := make(chan cdpReply, 1)
	b.waiting[id] = ch
	b.mu.Unlock()
	msg := map[string]any{"id": id, "method": method, "params": params}
	if session != "" {
		msg["sessionId"] = session
	}
	js, _ := json.Marshal(msg)
	ctx, cancel := context.WithTimeout(t.Context(), 30*time.Second)
	defer cancel()
	if err := b.ws.Write(ctx, websocket.MessageText, js); err != nil {
		t.Fatalf("%s: %v", method, err)
	}
	select {
	case r, ok := <-ch:
		if !ok {
			t.Fatalf("%s: DevTools connection closed", method)
		}
		if r.Error != nil {
			t.Fatalf("%s: %s", method, r.Error.Message)
		}
		if out != nil {
			if err := json.Unmarshal(r.Result, out); err != nil {
				t.Fatalf("%s: %v", method, err)
			}
		}
	case <-ctx.Done():
		t.Fatalf("%s: no answer in 30 s", method)
	}
}

// eval evaluates a JavaScript expression in the page and returns its value.
func (b *browser) eval(t *testing.T, expr string) any {
	t.Helper()
	var r struct {
		Result struct {
			Value any `json:"value"`
		} `json:"result"`
		ExceptionDetails *struct {
			Text string `json:"text"`
		} `json:"exceptionDetails"`
	}
	b.call(t, b.session, "Runtime.evaluate", map[string]any{"expression": expr, "returnByValue": true}, &r)
	if r.ExceptionDetails != nil {
		t.Fatalf("evaluate %s: %s", expr, r.ExceptionDetails.Text)
	}
	return r.Result.Value
}

// waitFor evaluates a boolean expression until it is true.
func (b *browser) waitFor(t *testing.T, what, expr string, timeout time.Duration) {
	t.Helper()
	deadline := time.Now().Add(timeout)
	for {
		if v, _ := b.eval(t, expr).(bool); v {
			return
		}
		if time.Now().After(deadline) {
			body, _ := b.eval(t, "document.body.innerText").(string)
			t.Fatalf("page never showed %s within %v; page text:\n%s", what, timeout, body)
		}
		time.Sleep(100 * time.Millisecond)
	}
}

// screenshot writes the whole page as a PNG.
func (b *browser) screenshot(t *testing.T, path string) {
	t.Helper()
	var r struct {
		Data []byte `json:"data"` // base64 in JSON
	}
	b.call(t, b.session, "Page.captureScreenshot", map[string]any{"format": "png", "captureBeyondViewport": true}, &r)
	if err := os.WriteFile(path, r.Data, 0o644); err != nil {
		t.Fatal(err)
	}
}

func (b *browser) close() {
	if b.ws != nil {
		b.ws.CloseNow()
	}
	if p := b.cmd.Process; p != nil {
		_ = syscall.Kill(-p.Pid, syscall.SIGKILL) // the group: chromium and its helpers
		_ = b.cmd.Wait()
	}
}
