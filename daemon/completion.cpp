// Completion scripts generated from a CLI11 App (completion.hpp).
#include "daemon/completion.hpp"

#include <algorithm>
#include <initializer_list>
#include <set>
#include <stdexcept>
#include <string_view>
#include <utility>
#include <vector>

namespace policyd::completion {
namespace {

// (Plain string building, no fmt: GCC 12 at -O3 reports a false -Wstringop-overflow inside
// fmt's format-spec parser for this file.)
template <typename Container>
std::string join(const Container& items, const std::string& separator) {
  std::string out;
  for (const auto& item : items) {
    if (!out.empty()) out += separator;
    out += item;
  }
  return out;
}

// `text` with every @KEY@ replaced by its value.
std::string fill(std::string text, std::initializer_list<std::pair<std::string_view, std::string>> values) {
  for (const auto& [key, value] : values) {
    const std::string marker = "@" + std::string(key) + "@";
    for (auto at = text.find(marker); at != std::string::npos; at = text.find(marker, at + value.size()))
      text.replace(at, marker.size(), value);
  }
  return text;
}

// What the value of an option or a positional completes to.
struct Value {
  enum class Kind { kNone, kMembers, kPolicyFile, kAnyFile } kind = Kind::kNone;
  std::vector<std::string> members;
};

struct Opt {
  std::vector<std::string> names;  // "-o", "--output"
  std::string help;
  bool takes_value = false;
  Value value;
};

struct Positional {
  std::string name;
  std::string help;
  bool repeats = false;  // takes every further argument
  Value value;
};

struct Command {
  std::string name;
  std::string help;
  std::vector<Opt> options;
  std::vector<Positional> positionals;
};

struct Model {
  std::string program;
  std::vector<Opt> global;
  std::vector<Command> commands;
};

// Names and members go into the scripts unquoted or single-quoted: only plain tokens.
const std::string& token(const std::string& s) {
  const bool plain = !s.empty() && std::all_of(s.begin(), s.end(), [](char c) {
    return (c >= 'a' && c <= 'z') || (c >= 'A' && c <= 'Z') || (c >= '0' && c <= '9') || c == '-' || c == '_' ||
           c == '.' || c == '+';
  });
  if (!plain) throw std::invalid_argument("completion: '" + s + "' is not a plain word");
  return s;
}

// CLI11 renders an IsMember check into the type name as ":{a,b,c}".
std::vector<std::string> members_of(const std::string& type_name) {
  const auto open = type_name.find(":{");
  if (open == std::string::npos) return {};
  const auto close = type_name.find('}', open);
  if (close == std::string::npos) return {};
  std::vector<std::string> out;
  const std::string list = type_name.substr(open + 2, close - open - 2);
  std::size_t start = 0;
  for (;;) {
    const auto comma = list.find(',', start);
    out.push_back(token(list.substr(start, comma - start)));
    if (comma == std::string::npos) break;
    start = comma + 1;
  }
  return out;
}

Value value_of(const CLI::Option& o, bool positional) {
  Value v;
  const std::string type = o.get_type_name();
  v.members = members_of(type);
  const std::string base = type.substr(0, type.find(':'));
  if (!v.members.empty())
    v.kind = Value::Kind::kMembers;
  else if (positional && o.get_name(true) == "FILE")
    v.kind = Value::Kind::kPolicyFile;
  else if (base == "PATH" || base == "FILE")
    v.kind = Value::Kind::kAnyFile;
  return v;
}

// The visible options and positionals of `app` (and of its nameless option groups).
void collect(const CLI::App& app, std::vector<Opt>* options, std::vector<Positional>* positionals) {
  for (const CLI::Option* o : app.get_options()) {
    if (o->get_group().empty()) continue;  // hidden
    if (o->nonpositional()) {
      Opt opt;
      for (const auto& s : o->get_snames()) opt.names.push_back("-" + token(s));
      for (const auto& l : o->get_lnames()) opt.names.push_back("--" + token(l));
      opt.help = o->get_description();
      opt.takes_value = o->get_items_expected_max() > 0;
      if (opt.takes_value) opt.value = value_of(*o, false);
      options->push_back(std::move(opt));
    } else if (positionals) {
      Positional p;
      p.name = o->get_name(true);
      p.help = o->get_description();
      p.repeats = o->get_items_expected_max() > 1;
      p.value = value_of(*o, true);
      positionals->push_back(std::move(p));
    }
  }
  for (const CLI::App* group : app.get_subcommands([](const CLI::App* a) { return a->get_name().empty(); }))
    collect(*group, options, positionals);
}

Model model_of(const CLI::App& app) {
  Model m;
  // CLI11 names the App after argv[0] when it has no name: the program is its last component
  const std::string name = app.get_name();
  m.program = token(name.substr(name.find_last_of('/') + 1));
  collect(app, &m.global, nullptr);
  for (const CLI::App* sub : app.get_subcommands([](const CLI::App* a) { return !a->get_name().empty(); })) {
    if (sub->get_group().empty() || sub->get_disabled()) continue;  // hidden
    Command c;
    c.name = token(sub->get_name());
    c.help = sub->get_description();
    collect(*sub, &c.options, &c.positionals);
    m.commands.push_back(std::move(c));
  }
  return m;
}

std::string words(const std::vector<Opt>& options) {
  std::vector<std::string> out;
  for (const auto& o : options) out.insert(out.end(), o.names.begin(), o.names.end());
  return join(out, " ");
}

// A command's options, then the program's options it does not redefine (they may follow it).
std::vector<Opt> options_after(const Model& m, const Command& c) {
  std::vector<Opt> out = c.options;
  std::set<std::string> taken;
  for (const auto& o : c.options) taken.insert(o.names.begin(), o.names.end());
  for (const auto& g : m.global) {
    Opt rest = g;
    rest.names.erase(std::remove_if(rest.names.begin(), rest.names.end(),
                                    [&](const std::string& n) { return taken.count(n) > 0; }),
                     rest.names.end());
    if (!rest.names.empty()) out.push_back(std::move(rest));
  }
  return out;
}

// ---------------------------------------------------------------------------------------
// bash

std::string bash_value(const std::string& fn, const Value& v) {
  switch (v.kind) {
    case Value::Kind::kMembers:
      return "COMPREPLY=($(compgen -W '" + join(v.members, " ") + "' -- \"$cur\"))";
    case Value::Kind::kPolicyFile:
      return fn + "_files policy";
    case Value::Kind::kAnyFile:
      return fn + "_files any";
    case Value::Kind::kNone:
      break;
  }
  return ":";
}

// `case $prev in` branches for the options among `options` that take a value.
std::string bash_option_values(const std::string& fn, const std::vector<Opt>& options, const std::string& indent) {
  std::string out;
  for (const auto& o : options)
    if (o.takes_value)
      out += indent + join(o.names, "|") + ") " + bash_value(fn, o.value) + "; return 0 ;;\n";
  return out;
}

std::string bash(const Model& m) {
  const std::string fn = "_" + m.program;
  std::string s;
  s += fill(
      "# bash completion for @P@                                    -*- shell-script -*-\n"
      "# Generated by `@P@ completion bash` from the commands and options @P@ accepts.\n"
      "# Installed as /usr/share/bash-completion/completions/@P@; or: source <(@P@ completion bash)\n"
      "\n"
      "# @F@_files policy|any: file names for the word being completed ($cur); policy: YAML files\n"
      "# and directories (every file when no YAML file matches).\n"
      "@F@_files() {\n"
      "    local IFS=$'\\n'\n"
      "    local -a yaml\n"
      "    compopt -o filenames 2>/dev/null\n"
      "    if [[ $1 == policy ]]; then\n"
      "        yaml=($(compgen -f -X '!*.yaml' -- \"$cur\") $(compgen -f -X '!*.yml' -- \"$cur\"))\n"
      "        if ((${#yaml[@]})); then\n"
      "            COMPREPLY=($(compgen -d -- \"$cur\") \"${yaml[@]}\")\n"
      "            return 0\n"
      "        fi\n"
      "    fi\n"
      "    COMPREPLY=($(compgen -f -- \"$cur\"))\n"
      "}\n"
      "\n"
      "@F@() {\n"
      "    local cur=${COMP_WORDS[COMP_CWORD]} prev=\n"
      "    ((COMP_CWORD > 0)) && prev=${COMP_WORDS[COMP_CWORD - 1]}\n"
      "    COMPREPLY=()\n"
      "    # --option=VALUE: bash splits the word at '=' (COMP_WORDBREAKS)\n"
      "    if [[ $cur == = ]]; then\n"
      "        cur=\n"
      "    elif [[ $prev == = ]] && ((COMP_CWORD > 1)); then\n"
      "        prev=${COMP_WORDS[COMP_CWORD - 2]}\n"
      "    fi\n"
      "    # The command (the first word that is not an option or an option's value) and how many\n"
      "    # arguments it has before the word being completed.\n"
      "    local i w cmd= nargs=0 skip=0 dashdash=0\n"
      "    for ((i = 1; i < COMP_CWORD; i++)); do\n"
      "        w=${COMP_WORDS[i]}\n"
      "        if ((skip)); then\n"
      "            [[ $w == = ]] || skip=0\n"
      "            continue\n"
      "        fi\n"
      "        if ((!dashdash)); then\n"
      "            case $w in\n",
      {{"P", m.program}, {"F", fn}});
  // every option that takes a value, at any level: its value is not the command
  std::set<std::string> valued;
  for (const auto& o : m.global)
    if (o.takes_value) valued.insert(o.names.begin(), o.names.end());
  for (const auto& c : m.commands)
    for (const auto& o : c.options)
      if (o.takes_value) valued.insert(o.names.begin(), o.names.end());
  if (!valued.empty()) s += "                " + join(valued, "|") + ") skip=1; continue ;;\n";
  s +=
      "                --) dashdash=1; continue ;;\n"
      "                -*) continue ;;\n"
      "            esac\n"
      "        fi\n"
      "        if [[ -z $cmd ]]; then\n"
      "            cmd=$w\n"
      "        else\n"
      "            ((nargs++))\n"
      "        fi\n"
      "    done\n"
      "    case $prev in\n";
  s += bash_option_values(fn, m.global, "        ");
  s += "    esac\n";
  std::vector<std::string> names;
  for (const auto& c : m.commands) names.push_back(c.name);
  s += fill(
      "    case $cmd in\n"
      "        '')\n"
      "            if [[ $cur == -* ]]; then\n"
      "                COMPREPLY=($(compgen -W '@OPTIONS@' -- \"$cur\"))\n"
      "            else\n"
      "                COMPREPLY=($(compgen -W '@COMMANDS@' -- \"$cur\"))\n"
      "            fi\n"
      "            ;;\n",
      {{"OPTIONS", words(m.global)}, {"COMMANDS", join(names, " ")}});
  for (const auto& c : m.commands) {
    const auto options = options_after(m, c);
    s += "        " + c.name + ")\n";
    std::string values = bash_option_values(fn, c.options, "                ");
    if (!values.empty()) s += "            case $prev in\n" + values + "            esac\n";
    const std::string opts = "COMPREPLY=($(compgen -W '" + words(options) + "' -- \"$cur\"))";
    if (c.positionals.empty()) {
      s += "            " + opts + "\n";  // no arguments: its options, whatever the word
    } else {
      s += "            if [[ $cur == -* ]] && ((!dashdash)); then\n                " + opts + "\n";
      s += "            else\n                case $nargs in\n";
      for (std::size_t i = 0; i < c.positionals.size(); ++i) {
        const auto& p = c.positionals[i];
        const bool last = i + 1 == c.positionals.size();
        s += "                    " + (last && p.repeats ? std::string("*") : std::to_string(i)) + ") " +
             bash_value(fn, p.value) + " ;;  # " + p.name + "\n";
      }
      if (!c.positionals.back().repeats) s += "                    *) " + opts + " ;;\n";
      s += "                esac\n            fi\n";
    }
    s += "            ;;\n";
  }
  s += "    esac\n"
       "    return 0\n"
       "}\n"
       "complete -F " + fn + " " + m.program + "\n";
  return s;
}

// ---------------------------------------------------------------------------------------
// zsh

// A string inside single quotes.
std::string zsh_quote(const std::string& s) {
  std::string out = "'";
  for (char c : s) {
    if (c == '\'')
      out += "'\\''";
    else
      out += c;
  }
  return out + "'";
}

// Text inside an _arguments spec: brackets and colons escaped; one line.
std::string zsh_text(const std::string& s) {
  std::string out;
  for (char c : s) {
    if (c == '[' || c == ']' || c == ':' || c == '\\') out += '\\';
    out += c == '\n' ? ' ' : c;
  }
  return out;
}

std::string zsh_action(const Value& v) {
  switch (v.kind) {
    case Value::Kind::kMembers:
      return "(" + join(v.members, " ") + ")";
    case Value::Kind::kPolicyFile:
      return "_files -g \"*.(yaml|yml)(-.)\"";
    case Value::Kind::kAnyFile:
      return "_files";
    case Value::Kind::kNone:
      break;
  }
  return " ";
}

// _arguments specs, each single-quoted on a line of its own ending in a continuation.
std::string zsh_specs(const std::vector<Opt>& options, const std::vector<Positional>& positionals,
                      const std::string& indent) {
  std::string out;
  for (const auto& o : options) {
    const std::string exclusive = o.names.size() > 1 ? "(" + join(o.names, " ") + ")" : "";
    for (const auto& n : o.names) {
      std::string spec = exclusive + n;
      if (o.takes_value) spec += n.rfind("--", 0) == 0 ? "=" : "+";
      spec += "[" + zsh_text(o.help) + "]";
      if (o.takes_value) spec += ":" + zsh_text(o.help.empty() ? "value" : o.help) + ":" + zsh_action(o.value);
      out += indent + zsh_quote(spec) + " \\\n";
    }
  }
  for (const auto& p : positionals) {
    const std::string message = zsh_text(p.help.empty() ? p.name : p.help);
    out += indent + zsh_quote((p.repeats ? "*:" : ":") + message + ":" + zsh_action(p.value)) + " \\\n";
  }
  return out;
}

std::string zsh(const Model& m) {
  const std::string fn = "_" + m.program;
  std::string s = fill(
      "#compdef @P@\n"
      "# zsh completion for @P@, generated by `@P@ completion zsh` from the commands and options it accepts.\n"
      "# Installed as /usr/share/zsh/vendor-completions/@F@; or: source <(@P@ completion zsh)\n"
      "\n"
      "@F@() {\n"
      "  local curcontext=$curcontext state state_descr line ret=1\n"
      "  typeset -A opt_args\n"
      "  _arguments -C -s \\\n",
      {{"P", m.program}, {"F", fn}});
  s += zsh_specs(m.global, {}, "    ");
  s +=
      "    ': :->command' \\\n"
      "    '*:: :->argument' && ret=0\n"
      "  case $state in\n"
      "    command)\n"
      "      local -a commands=(\n";
  for (const auto& c : m.commands)
    s += "        " + zsh_quote(c.name + ":" + c.help) + "\n";
  s += fill(
      "      )\n"
      "      _describe -t commands '@P@ command' commands && ret=0\n"
      "      ;;\n"
      "    argument)\n"
      "      curcontext=${curcontext%:*:*}:@P@-$words[1]:\n"
      "      case $words[1] in\n",
      {{"P", m.program}});
  for (const auto& c : m.commands) {
    s += "        " + c.name + ")\n          _arguments -s \\\n";
    s += zsh_specs(options_after(m, c), c.positionals, "            ");
    s += "            && ret=0\n          ;;\n";
  }
  s += fill(
      "      esac\n"
      "      ;;\n"
      "  esac\n"
      "  return ret\n"
      "}\n"
      "\n"
      "if [[ $zsh_eval_context[-1] == loadautofunc ]]; then\n"
      "  @F@ \"$@\"\n"
      "else\n"
      "  compdef @F@ @P@\n"
      "fi\n",
      {{"F", fn}, {"P", m.program}});
  return s;
}

}  // namespace

std::string script(const CLI::App& app, const std::string& shell) {
  const Model m = model_of(app);
  if (shell == "bash") return bash(m);
  if (shell == "zsh") return zsh(m);
  throw std::invalid_argument("no completion for shell '" + shell + "' (bash or zsh)");
}

}  // namespace policyd::completion
