#!/usr/bin/env bash
# Build every container image the demo stack and the tests use. There is no image
# registry, so everything is built locally from Debian packages:
#
#   lastgood-bench/busybox:1          FROM scratch + Debian's busybox-static (~2 MB)
#   lastgood-bench/debian:bookworm    debootstrap minbase + PostgreSQL 15, Python 3, ... (slow, once)
#   lastgood-demo/app:v1, :v2         demo/app (v2 answers /health with 500); :latest -> v1 once
#   lastgood-demo/postgres:15         demo/postgres
#   lastgood-demo/static:1            demo/static (busybox httpd)
#   lastgood-demo/nginx:1             demo/bluegreen/nginx (nginx-light in front of the blue-green demo)
#
# Idempotent: an image is skipped when it exists and carries the recipe hash it was built
# from (label lastgood.recipe), so an edited demo/ directory or a rebuilt base image leads to
# a rebuild while an unchanged re-run takes well under 2 s. --force rebuilds everything.
#
# Builds use the classic builder (DOCKER_BUILDKIT=0): BuildKit's RUN steps fail on an engine
# started with --bridge=none.
set -euo pipefail

usage() { printf 'usage: %s [--force]\n' "$0"; }

force=0
for arg in "$@"; do
  case "$arg" in
    --force) force=1 ;;
    -h | --help) usage; exit 0 ;;
    *) usage >&2; exit 2 ;;
  esac
done

repo=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)
export DOCKER_BUILDKIT=0
LABEL=lastgood.recipe

log() { printf 'build-images: %s\n' "$*"; }
die() { printf 'build-images: ERROR: %s\n' "$*" >&2; exit 1; }

# Temporary directories are removed on any exit, including failures and Ctrl-C.
tmpdirs=()
cleanup() {
  local d
  for d in "${tmpdirs[@]+"${tmpdirs[@]}"}"; do
    # An interrupted debootstrap can leave /proc or /sys mounted inside its target.
    awk -v d="$d/" 'index($2, d) == 1 {print $2}' /proc/mounts | sort -r | xargs -r umount -l 2>/dev/null || true
    rm -rf --one-file-system "$d"
  done
}
trap cleanup EXIT
trap 'exit 130' INT
trap 'exit 143' TERM
# new_tmpdir sets $tmpdir (not printed: a $(...) subshell could not register it for cleanup).
new_tmpdir() {
  # /var/tmp: the Debian root file system is several hundred MB, too big for a small tmpfs.
  tmpdir=$(mktemp -d /var/tmp/lastgood-build.XXXXXX)
  tmpdirs+=("$tmpdir")
}

timeout 10 docker info >/dev/null 2>&1 ||
  die "the Docker engine does not answer (start it with scripts/setup-engine.sh)"

# One build at a time per machine: test sessions started side by side would otherwise each
# run debootstrap and race to tag the same names. The lock is taken on this script itself,
# so no lock file is created in a world-writable directory.
exec 9<"${BASH_SOURCE[0]}"
flock 9

# Recipe label of an existing image, empty when the image is missing or unlabelled.
image_recipe() {
  docker image inspect -f "{{ index .Config.Labels \"$LABEL\" }}" "$1" 2>/dev/null || true
}
image_id() { docker image inspect -f '{{ .Id }}' "$1"; }

# A hash of a build recipe: the given strings plus the contents of the given directory.
recipe_hash() {
  local dir=$1
  shift
  {
    printf '%s\n' "$@"
    if [ -n "$dir" ]; then
      (cd "$dir" && find . -type f -print0 | LC_ALL=C sort -z | xargs -0 sha256sum)
    fi
  } | sha256sum | cut -c1-16
}

# up_to_date IMAGE RECIPE: true when IMAGE exists with that recipe and --force was not given.
up_to_date() {
  [ "$force" = 0 ] && [ "$(image_recipe "$1")" = "$2" ]
}

# Builds that replace an image leave the old one untagged: remember it, and remove it at the
# end (children before parents) if nothing refers to it any more.
replaced=()
note_replaced() {
  local id
  id=$(image_id "$1" 2>/dev/null) && replaced+=("$id")
  return 0
}
remove_replaced() {
  local i id
  for ((i = ${#replaced[@]} - 1; i >= 0; i--)); do
    id=${replaced[i]}
    # Only images without any name left; a container still using one keeps it (rm fails).
    if [ "$(docker image inspect -f '{{ len .RepoTags }}' "$id" 2>/dev/null)" = 0 ]; then
      docker image rm "$id" >/dev/null 2>&1 && log "removed the replaced image ${id:7:12}"
    fi
  done
  return 0
}

# Quiet classic build; the builder's output is shown only when the build fails.
docker_build() {
  local out
  if ! out=$(docker build -q "$@" 2>&1); then
    printf '%s\n' "$out" >&2
    die "docker build $* failed"
  fi
}

debian_mirror() {
  # The mirror the machine's own apt sources use, so that nothing else is contacted.
  local uri
  uri=$(awk '/^URIs:/ {print $2; exit}' /etc/apt/sources.list.d/debian.sources 2>/dev/null || true)
  if [ -z "$uri" ] && [ -f /etc/apt/sources.list ]; then
    uri=$(awk '$1 == "deb" {print $2; exit}' /etc/apt/sources.list)
  fi
  printf '%s\n' "${uri:-http://deb.debian.org/debian}"
}

build_busybox() {
  local ref=lastgood-bench/busybox:1 bin=/bin/busybox
  [ -x "$bin" ] || die "$bin missing: apt-get install busybox-static"
  local recipe
  recipe=$(recipe_hash "" busybox-v1 "$(sha256sum <"$bin")")
  if up_to_date "$ref" "$recipe"; then
    log "$ref: up to date"
    return
  fi
  # The dynamically linked busybox package would not run in an empty image.
  if command -v readelf >/dev/null && LC_ALL=C readelf -l "$bin" | grep -q INTERP; then
    die "$bin is dynamically linked: install busybox-static instead of busybox"
  fi
  note_replaced "$ref"
  local start=$SECONDS ctx
  new_tmpdir
  ctx=$tmpdir
  cp "$bin" "$ctx/busybox"
  cat >"$ctx/Dockerfile" <<EOF
FROM scratch
COPY busybox /bin/busybox
RUN ["/bin/busybox", "--install", "-s", "/bin"]
LABEL $LABEL=$recipe
CMD ["/bin/sh"]
EOF
  docker_build -t "$ref" "$ctx"
  log "$ref: built in $((SECONDS - start)) s"
}

DEBIAN_PACKAGES=postgresql-15,python3,redis-server,nginx-light,procps

build_debian() {
  local ref=lastgood-bench/debian:bookworm
  local mirror recipe
  mirror=$(debian_mirror)
  # The mirror is not part of the recipe: the same packages from another mirror are the same image.
  recipe=$(recipe_hash "" debian-v2 bookworm minbase "$DEBIAN_PACKAGES")
  if up_to_date "$ref" "$recipe"; then
    log "$ref: up to date"
    return
  fi
  command -v debootstrap >/dev/null || die "debootstrap missing: apt-get install debootstrap"
  [ "$(id -u)" = 0 ] || die "debootstrap needs root"
  note_replaced "$ref"
  local start=$SECONDS root logf
  new_tmpdir
  root=$tmpdir/rootfs
  logf=$tmpdir/debootstrap.log
  if ! debootstrap --variant=minbase --include="$DEBIAN_PACKAGES" bookworm "$root" "$mirror" >"$logf" 2>&1; then
    tail -n 30 "$logf" >&2
    [ -f "$root/debootstrap/debootstrap.log" ] && tail -n 30 "$root/debootstrap/debootstrap.log" >&2
    die "debootstrap failed"
  fi
  # Slim the image: package caches, apt lists, documentation and message translations are
  # not needed at run time, and the "main" cluster that postgresql-common's postinst creates
  # is never used (the demo image initialises its own data directory).
  rm -rf "$root"/var/cache/apt/archives/*.deb "$root"/var/lib/apt/lists/* \
    "$root"/usr/share/doc/* "$root"/usr/share/man/* "$root"/usr/share/info/* \
    "$root"/usr/share/locale/* \
    "$root"/var/lib/postgresql/15/main "$root"/etc/postgresql/15/main
  # The build machine's resolver and hostname must not end up in the image.
  : >"$root/etc/resolv.conf"
  : >"$root/etc/hostname"
  tar -C "$root" --numeric-owner -c . |
    docker import \
      -c "LABEL $LABEL=$recipe" \
      -c 'ENV LANG=C.UTF-8 PATH=/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin' \
      -c 'CMD ["/bin/bash"]' \
      - "$ref" >/dev/null
  rm -rf --one-file-system "$tmpdir"
  log "$ref: built in $((SECONDS - start)) s"
}

# build_from_dir REF BASE DIR [docker build args...]: build a demo image from a directory of
# the repository; the recipe covers the directory, the build args and the base image's ID.
build_from_dir() {
  local ref=$1 base=$2 dir=$3
  shift 3
  local recipe
  recipe=$(recipe_hash "$dir" "$@" "$(image_id "$base")")
  if up_to_date "$ref" "$recipe"; then
    log "$ref: up to date"
    return
  fi
  note_replaced "$ref"
  local start=$SECONDS
  docker_build --label "$LABEL=$recipe" -t "$ref" "$@" "$dir"
  log "$ref: built in $((SECONDS - start)) s"
}

build_busybox
build_debian
# :latest is what the demo stack deploys; the rollback playbooks move it between releases, so
# it is only created here (from v1), never reset. When v1 or v2 is rebuilt, a :latest that
# pointed at the old build follows it to the new one, so it keeps naming the same release.
old_latest=$(image_id lastgood-demo/app:latest 2>/dev/null || true)
latest_moved=0
for version in v1 v2; do
  old_id=$(image_id "lastgood-demo/app:$version" 2>/dev/null || true)
  broken=0
  [ "$version" = v2 ] && broken=1
  build_from_dir "lastgood-demo/app:$version" lastgood-bench/debian:bookworm "$repo/demo/app" \
    --build-arg "APP_VERSION=$version" --build-arg "APP_BROKEN_HEALTH=$broken"
  if [ -n "$old_latest" ] && [ "$old_latest" = "$old_id" ] &&
    [ "$(image_id "lastgood-demo/app:$version")" != "$old_id" ]; then
    docker tag "lastgood-demo/app:$version" lastgood-demo/app:latest
    log "lastgood-demo/app:latest: moved to the rebuilt $version"
    latest_moved=1
  fi
done
if [ -z "$old_latest" ]; then
  docker tag lastgood-demo/app:v1 lastgood-demo/app:latest
  log "lastgood-demo/app:latest: tagged from v1"
elif [ "$latest_moved" = 0 ]; then
  log "lastgood-demo/app:latest: exists, left as it is"
fi
build_from_dir lastgood-demo/postgres:15 lastgood-bench/debian:bookworm "$repo/demo/postgres"
build_from_dir lastgood-demo/static:1 lastgood-bench/busybox:1 "$repo/demo/static"
build_from_dir lastgood-demo/nginx:1 lastgood-bench/debian:bookworm "$repo/demo/bluegreen/nginx"
remove_replaced
