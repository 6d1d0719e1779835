-- pandoc filter for the man pages made from Markdown (cmake/Packaging.cmake).
--
-- policyd.yaml(5) is policyd.yaml.5.md (NAME, SYNOPSIS, DESCRIPTION) followed by the policy
-- reference docs/policy.md, a document of its own: after the marker comment
-- "<!-- policy reference -->", its title (a first level-1 heading) is dropped and its headings
-- are raised so that its top level becomes the page's sections (.SH, in capitals as man pages
-- have them; code in a heading is kept as it is) and the next one subsections (.SS).
-- Its SEE ALSO section (made when it has none) names policyd(8) and policyctl(8) first.
--
-- Tables become definition lists: a man page is read at 80 columns, where tbl tables of prose
-- do not fit (groff warns, and lintian reports it). The first column is the term; with two
-- columns the second is the definition, with more each further column is a line
-- "HEADER: CELL".
--
-- In every page, links without a scheme (other Markdown files of the repository, which a man
-- page's reader does not have, and anchors) keep their text only.

local MARKER = "<!-- policy reference -->"

local function is_marker(block)
  return block.t == "RawBlock" and block.format == "html" and block.text:match("^%s*" .. MARKER:gsub("%p", "%%%0") .. "%s*$")
end

function Pandoc(doc)
  local blocks = doc.blocks
  local start
  for i, b in ipairs(blocks) do
    if is_marker(b) then start = i break end
  end
  if not start then return doc end
  local out = pandoc.List()
  for i = 1, start - 1 do out:insert(blocks[i]) end
  local rest = pandoc.List()
  for i = start + 1, #blocks do rest:insert(blocks[i]) end
  -- the reference's own title
  if #rest > 0 and rest[1].t == "Header" and rest[1].level == 1 then rest:remove(1) end
  local top
  for _, b in ipairs(rest) do
    if b.t == "Header" and (top == nil or b.level < top) then top = b.level end
  end
  local shift = top and (top - 1) or 0
  for _, b in ipairs(rest) do
    if b.t == "Header" then
      b.level = b.level - shift
      if b.level == 1 then
        b = b:walk({ Str = function(s) return pandoc.Str(pandoc.text.upper(s.text)) end })
      end
    end
    out:insert(b)
  end
  -- SEE ALSO names the other man pages first (the reference's own entries are documents)
  local see_also = pandoc.Para({ pandoc.Strong({ pandoc.Str("policyd") }), pandoc.Str("(8),"), pandoc.Space(),
                                 pandoc.Strong({ pandoc.Str("policyctl") }), pandoc.Str("(8)") })
  local at
  for i = start, #out do
    if out[i].t == "Header" and out[i].level == 1 and pandoc.utils.stringify(out[i]):lower() == "see also" then at = i end
  end
  if at then
    out:insert(at + 1, see_also)
  else
    out:insert(pandoc.Header(1, { pandoc.Str("SEE"), pandoc.Space(), pandoc.Str("ALSO") }))
    out:insert(see_also)
  end
  doc.blocks = out
  return doc
end

function Link(link)
  if not link.target:match("^%a[%w+.-]*:") then
    return link.content
  end
end

local function inlines_of(blocks)
  local out = pandoc.List()
  for _, b in ipairs(blocks) do
    if b.content and (b.t == "Plain" or b.t == "Para") then
      if #out > 0 then out:insert(pandoc.Space()) end
      out:extend(b.content)
    end
  end
  return out
end

function Table(tbl)
  local t = pandoc.utils.to_simple_table(tbl)
  local items = pandoc.List()
  for _, row in ipairs(t.rows) do
    local def = pandoc.List()
    if #row == 2 then
      def = inlines_of(row[2])
    else
      for i = 2, #row do
        local cell = inlines_of(row[i])
        if #cell > 0 then
          if #def > 0 then def:insert(pandoc.RawInline("man", "\n.br\n")) end
          def:extend(inlines_of(t.headers[i]))
          def:insert(pandoc.Str(":"))
          def:insert(pandoc.Space())
          def:extend(cell)
        end
      end
    end
    items:insert({ inlines_of(row[1]), { { pandoc.Plain(def) } } })
  end
  return pandoc.DefinitionList(items)
end
