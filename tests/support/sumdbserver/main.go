// Command sumdbserver is a checksum database for tests: the reference implementation of
// golang.org/x/mod/sumdb (an in-memory TestServer) signing the go.sum lines of the modules
// found in a directory in GOPROXY layout. It is not Entrepôt code, so it can check it.
//
//	sumdbserver -genkey sum.test.example
//	sumdbserver -skey PRIVATE+KEY+... -listen 127.0.0.1:0 -source DIR [-seed N]
//
// Once bound it prints one line, "listening on http://HOST:PORT", to stdout. Stderr gets
// "verifier <key>" (the verifier key of -skey) and one "request METHOD PATH STATUS" line per
// request. Records are kept in memory: a restart begins a new tree.
package main

import (
	"context"
	"crypto/ed25519"
	"crypto/rand"
	"crypto/sha256"
	"encoding/base64"
	"errors"
	"flag"
	"fmt"
	"io"
	"io/fs"
	"log"
	"net"
	"net/http"
	"os"
	"path/filepath"
	"strings"
	"sync"

	"golang.org/x/mod/module"
	"golang.org/x/mod/sumdb"
	"golang.org/x/mod/sumdb/dirhash"
	"golang.org/x/mod/sumdb/note"
	"golang.org/x/mod/sumdb/tlog"
)

// seedModulePrefix names the made-up modules that -seed records.
const seedModulePrefix = "fork.test.example/m"

func main() {
	genkey := flag.String("genkey", "", "print a signer key and a verifier key for this database `name`, then exit")
	skey := flag.String("skey", "", "the signer `key` of the database")
	listen := flag.String("listen", "127.0.0.1:0", "the `address` to serve on")
	source := flag.String("source", "", "a `directory` in GOPROXY layout holding the modules to sign")
	seed := flag.Int("seed", 0, "add `N` made-up records before serving (a different N: a forked history)")
	flag.Parse()
	log.SetFlags(0)

	if *genkey != "" {
		signer, verifier, err := note.GenerateKey(rand.Reader, *genkey)
		if err != nil {
			log.Fatalf("sumdbserver: %v", err)
		}
		fmt.Println(signer)
		fmt.Println(verifier)
		return
	}
	if *skey == "" || *source == "" {
		log.Fatal("sumdbserver: -skey and -source are required (or -genkey NAME)")
	}
	verifier, err := verifierKey(*skey)
	if err != nil {
		log.Fatalf("sumdbserver: -skey: %v", err)
	}

	synthetic := seedRecords(*seed)
	gosum := func(path, version string) ([]byte, error) {
		if lines, ok := synthetic[path+"@"+version]; ok {
			return lines, nil
		}
		return goSumLines(*source, path, version)
	}
	ts := sumdb.NewTestServer(*skey, gosum)
	for i := 0; i < *seed; i++ {
		if _, err := ts.Lookup(context.Background(), seedModule(i)); err != nil {
			log.Fatalf("sumdbserver: seeding: %v", err)
		}
	}

	ln, err := net.Listen("tcp", *listen)
	if err != nil {
		log.Fatalf("sumdbserver: %v", err)
	}
	log.Printf("verifier %s", verifier)
	fmt.Fprintf(os.Stdout, "listening on http://%s\n", ln.Addr())
	os.Stdout.Sync()

	handler := logRequests(sumdb.NewServer(notFoundOps{ts}))
	if err := http.Serve(ln, handler); err != nil {
		log.Fatalf("sumdbserver: %v", err)
	}
}

// verifierKey derives the verifier key of a signer key.
func verifierKey(skey string) (string, error) {
	signer, err := note.NewSigner(skey) // validates the key, including its hash
	if err != nil {
		return "", err
	}
	// PRIVATE+KEY+<name>+<hash>+<base64>: names have no "+", the base64 may have some.
	fields := strings.SplitN(skey, "+", 5)
	key, err := base64.StdEncoding.DecodeString(fields[len(fields)-1])
	if err != nil || len(key) != 1+ed25519.SeedSize {
		return "", errors.New("not an Ed25519 signer key")
	}
	pub := ed25519.NewKeyFromSeed(key[1:]).Public().(ed25519.PublicKey)
	return note.NewEd25519VerifierKey(signer.Name(), pub)
}

func seedModule(i int) module.Version {
	return module.Version{Path: fmt.Sprintf("%s%03d", seedModulePrefix, i), Version: "v1.0.0"}
}

// seedRecords makes up n well-formed go.sum records whose hashes depend on n, so that
// databases seeded with different counts disagree from their first record on.
func seedRecords(n int) map[string][]byte {
	records := make(map[string][]byte, n)
	for i := 0; i < n; i++ {
		m := seedModule(i)
		fake := func(what string) string {
			sum := sha256.Sum256([]byte(fmt.Sprintf("seed %d %s %s", n, m, what)))
			return "h1:" + base64.StdEncoding.EncodeToString(sum[:])
		}
		records[m.String()] = []byte(fmt.Sprintf("%s %s %s\n%s %s/go.mod %s\n",
			m.Path, m.Version, fake("zip"), m.Path, m.Version, fake("go.mod")))
	}
	return records
}

// goSumLines computes the two go.sum lines of path@version from the files of dir.
// A module missing there is reported as an *fs.PathError wrapping fs.ErrNotExist: the
// sumdb server tests os.IsNotExist (which does not unwrap %w chains) to answer 404.
func goSumLines(dir, path, version string) ([]byte, error) {
	notFound := &fs.PathError{Op: "lookup", Path: path + "@" + version, Err: fs.ErrNotExist}
	escPath, err := module.EscapePath(path)
	if err != nil {
		return nil, notFound
	}
	escVersion, err := module.EscapeVersion(version)
	if err != nil {
		return nil, notFound
	}
	base := filepath.Join(dir, filepath.FromSlash(escPath), "@v", escVersion)
	zipFile, modFile := base+".zip", base+".mod"
	for _, file := range []string{zipFile, modFile} {
		if _, err := os.Stat(file); err != nil {
			return nil, notFound
		}
	}
	zipHash, err := dirhash.HashZip(zipFile, dirhash.Hash1)
	if err != nil {
		return nil, fmt.Errorf("hashing %s: %v", zipFile, err)
	}
	modHash, err := dirhash.Hash1([]string{"go.mod"}, func(string) (io.ReadCloser, error) {
		return os.Open(modFile)
	})
	if err != nil {
		return nil, fmt.Errorf("hashing %s: %v", modFile, err)
	}
	return []byte(fmt.Sprintf("%s %s %s\n%s %s/go.mod %s\n",
		path, version, zipHash, path, version, modHash)), nil
}

// notFoundOps makes reads past the end of the tree answer 404, as a real database does for
// tiles it does not have yet, instead of an error (500) or a panic (a dropped connection)
// from the TestServer.
type notFoundOps struct{ *sumdb.TestServer }

func (o notFoundOps) ReadRecords(ctx context.Context, id, n int64) ([][]byte, error) {
	records, err := o.TestServer.ReadRecords(ctx, id, n)
	if err != nil {
		return nil, &fs.PathError{Op: "read records", Path: fmt.Sprint(id), Err: fs.ErrNotExist}
	}
	return records, nil
}

func (o notFoundOps) ReadTileData(ctx context.Context, t tlog.Tile) (data []byte, err error) {
	defer func() {
		if recover() != nil { // the TestServer indexes its hash slice without a bounds check
			data, err = nil, &fs.PathError{Op: "read tile", Path: t.Path(), Err: fs.ErrNotExist}
		}
	}()
	return o.TestServer.ReadTileData(ctx, t)
}

type statusWriter struct {
	http.ResponseWriter
	once   sync.Once
	status int
}

func (w *statusWriter) WriteHeader(status int) {
	w.once.Do(func() { w.status = status })
	w.ResponseWriter.WriteHeader(status)
}

func (w *statusWriter) Write(b []byte) (int, error) {
	w.once.Do(func() { w.status = http.StatusOK })
	return w.ResponseWriter.Write(b)
}

// logRequests writes "request METHOD PATH STATUS" to stderr once each request is answered.
func logRequests(next http.Handler) http.Handler {
	return http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		sw := &statusWriter{ResponseWriter: w}
		next.ServeHTTP(sw, r)
		sw.once.Do(func() { sw.status = http.StatusOK })
		log.Printf("request %s %s %d", r.Method, r.URL.Path, sw.status)
	})
}
