# Helpers sourced by the launch scripts: quoting, dry-run aware execution, errors.
# Not a launcher itself.

DRY_RUN=${DRY_RUN:-0}

# Prints words as one shell command line a user can paste (quotes only where needed).
quote_cmd() {
  local out="" w
  for w in "$@"; do
    if [[ "$w" =~ ^[A-Za-z0-9_./:=,@%+-]+$ ]]; then
      out+="$w "
    else
      out+="'${w//\'/\'\\\'\'}' "
    fi
  done
  printf '%s\n' "${out% }"
}

# Runs a command, or with --dry-run prints it instead.
run() {
  if [[ "$DRY_RUN" == 1 ]]; then
    quote_cmd "$@"
  else
    echo "+ $(quote_cmd "$@")" >&2
    "$@"
  fi
}

die() {
  echo "$(basename "$0"): $*" >&2
  exit 2
}

require() {  # require NAME VALUE FLAG
  [[ -n "$2" ]] || die "$3 is required (see --help)."
}
