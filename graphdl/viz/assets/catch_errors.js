/* Runs first, in <head>: counts uncaught errors, rejected promises and console.error
   calls on <html data-console-errors> (the browser tests read it from the dumped DOM). */
(function () {
  var seen = [];
  function note(text) {
    seen.push(String(text));
    document.documentElement.setAttribute("data-console-errors", String(seen.length));
    document.documentElement.setAttribute("data-console-text", seen.join(" | ").slice(0, 2000));
  }
  window.addEventListener("error", function (ev) { note(ev.message || "error"); });
  window.addEventListener("unhandledrejection", function (ev) { note("unhandled rejection: " + ev.reason); });
  var original = console.error;
  console.error = function () {
    note(Array.prototype.join.call(arguments, " "));
    return original.apply(console, arguments);
  };
})();
