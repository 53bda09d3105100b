-- mbrun --watch: a service of mbrun's own that reloads, as handle:reload()
-- does, every service whose script file changes (mb._watch calls back with
-- the path once the file has been quiet for 0.1 s). It says on stderr what
-- it reloaded, or why a reload failed (the old instances then keep running).
mb._service_info{hidden = true} -- mbrun's own: mb.services() leaves it out
mb._watch(function(path)
  for _, s in ipairs(mb.services()) do
    if s.path == path then
      local h, err = s.handle:reload()
      if h then
        io.stderr:write(("mbrun: --watch: %s changed: reloaded %s (%d instance%s)\n"):format(
          path, s.name, s.instances, s.instances == 1 and "" or "s"))
      else
        io.stderr:write(("mbrun: --watch: %s changed, but %s did not reload (%s); " ..
          "the old instances keep running\n"):format(path, s.name, err))
      end
    end
  end
end)
