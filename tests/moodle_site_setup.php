<?php
// LMS-bridge test helper (not part of Moodle): create on a *test* Moodle site what
// rules/README.md says an admin creates before go-live for the shipped benefits rules:
//   - courses BEN-2026 and BEN-2026-MGR (idnumber = shortname), each with an enabled manual
//     enrolment instance;
//   - cohort BEN2026 (idnumber, system context);
//   - custom user profile fields with short names `title` and `roles` (text);
//   - completion tracking on both courses, each with two activities (a page completed by
//     viewing it, a page the learner marks complete) that its completion criteria require
//     (activity criteria, aggregation "all"): what `bridge training --refresh` reads;
//   - course LIB ("Library tour"): a manual enrolment instance, completion tracking off;
//   - the read-back functions in the token's service `lmsbridge` (core_completion_*), and,
//     for the tests only (a learner's progress made by hand, never called by the bridge),
//     core_completion_override_activity_completion_status.
// Idempotent: whatever exists already is kept (and a missing idnumber or manual instance added).
// Uses Moodle's own APIs: create_course, cohort_add_cohort, profile_save_category and
// profile_save_field (user/profile/definelib.php), create_module (course/lib.php), the
// completion criteria classes as course/completion.php saves them (Moodle 4.3).
// Usage: php tests/moodle_site_setup.php /path/to/moodle
define('CLI_SCRIPT', true);

$moodledir = $argv[1] ?? '/tmp/moodle';
require($moodledir . '/config.php');
require_once($CFG->libdir . '/clilib.php');
require_once($CFG->dirroot . '/course/lib.php');
require_once($CFG->dirroot . '/cohort/lib.php');
require_once($CFG->dirroot . '/user/profile/lib.php');
require_once($CFG->dirroot . '/user/profile/definelib.php');
require_once($CFG->dirroot . '/webservice/lib.php');
require_once($CFG->libdir . '/completionlib.php');
require_once($CFG->dirroot . '/completion/criteria/completion_criteria_activity.php');

\core\session\manager::set_user(get_admin());

$courses = [
    'BEN-2026' => 'Benefits 2026: open enrolment',
    'BEN-2026-MGR' => 'Benefits 2026: for managers',
];
$untracked = ['LIB' => 'Library tour'];
$cohorts = ['BEN2026' => 'Benefits 2026'];
$fields = ['title' => 'Job title', 'roles' => 'HR role codes'];

/** The course named by idnumber or shortname, created if neither exists. */
function ensure_course(string $shortname, string $fullname, int $completion = 0): stdClass {
    global $DB;
    $course = $DB->get_record('course', ['idnumber' => $shortname])
        ?: $DB->get_record('course', ['shortname' => $shortname]);
    if ($course) {
        if ($course->idnumber === '') {
            $DB->set_field('course', 'idnumber', $shortname, ['id' => $course->id]);
            $course->idnumber = $shortname;
            echo "course $shortname: idnumber set\n";
        } else {
            echo "course $shortname: exists (id $course->id)\n";
        }
        return $course;
    }
    $course = create_course((object) [
        'category' => core_course_category::get_default()->id,
        'fullname' => $fullname,
        'shortname' => $shortname,
        'idnumber' => $shortname,
        'summary' => '',
        'summaryformat' => FORMAT_HTML,
        'enablecompletion' => $completion,
    ]);
    echo "course $shortname: created (id $course->id)\n";
    return $course;
}

/** An enabled manual enrolment instance on the course (new courses get one by default). */
function ensure_manual_instance(stdClass $course): void {
    global $DB;
    $plugin = enrol_get_plugin('manual');
    if ($plugin === null) {
        cli_error('the manual enrolment plugin is not enabled on this site');
    }
    $instance = $DB->get_record('enrol', ['courseid' => $course->id, 'enrol' => 'manual'], '*',
        IGNORE_MULTIPLE);
    if (!$instance) {
        $plugin->add_default_instance($course);
        echo "course $course->shortname: manual enrolment instance added\n";
    } else if ((int) $instance->status !== ENROL_INSTANCE_ENABLED) {
        $plugin->update_status($instance, ENROL_INSTANCE_ENABLED);
        echo "course $course->shortname: manual enrolment instance enabled\n";
    }
}

function ensure_cohort(string $idnumber, string $name): void {
    global $DB;
    $context = context_system::instance();
    $cohort = $DB->get_record('cohort', ['idnumber' => $idnumber, 'contextid' => $context->id]);
    if ($cohort) {
        echo "cohort $idnumber: exists (id $cohort->id)\n";
        return;
    }
    $id = cohort_add_cohort((object) [
        'contextid' => $context->id,
        'name' => $name,
        'idnumber' => $idnumber,
        'description' => '',
        'descriptionformat' => FORMAT_HTML,
        'visible' => 1,
    ]);
    echo "cohort $idnumber: created (id $id)\n";
}

/** The first profile field category, created when the site has none. */
function field_category(): int {
    global $DB;
    $categories = $DB->get_records('user_info_category', null, 'sortorder ASC', 'id', 0, 1);
    if ($categories) {
        return (int) reset($categories)->id;
    }
    profile_save_category((object) ['name' => get_string('profiledefaultcategory', 'admin')]);
    $categories = $DB->get_records('user_info_category', null, 'sortorder ASC', 'id', 0, 1);
    return (int) reset($categories)->id;
}

function ensure_text_field(string $shortname, string $name): void {
    global $DB;
    $field = $DB->get_record('user_info_field', ['shortname' => $shortname]);
    if ($field) {
        echo "profile field $shortname: exists ($field->datatype, id $field->id)\n";
        if ($field->datatype !== 'text') {
            cli_problem("profile field $shortname is $field->datatype, not text");
        }
        return;
    }
    // The defaults of the admin form (user/profile/definelib.php, field/text/define.class.php).
    profile_save_field((object) [
        'shortname' => $shortname,
        'name' => $name,
        'datatype' => 'text',
        'description' => ['text' => '', 'format' => FORMAT_HTML],
        'categoryid' => field_category(),
        'required' => 0,
        'locked' => 0,
        'visible' => PROFILE_VISIBLE_ALL,
        'forceunique' => 0,
        'signup' => 0,
        'defaultdata' => '',
        'param1' => 30,
        'param2' => 2048,
        'param3' => 0,
        'param4' => '',
        'param5' => '',
    ], []);
    echo "profile field $shortname: created\n";
}

/** A page in section 0 of the course, with completion tracking: automatic (complete when
 * viewed) or manual (the learner marks it). Kept when a module of that name exists. */
function ensure_page(stdClass $course, string $name, int $tracking): int {
    global $DB;
    $found = $DB->get_record_sql(
        'SELECT cm.id FROM {course_modules} cm JOIN {modules} m ON m.id = cm.module
           JOIN {page} p ON p.id = cm.instance
          WHERE m.name = :mod AND cm.course = :course AND p.name = :name AND cm.deletioninprogress = 0',
        ['mod' => 'page', 'course' => $course->id, 'name' => $name], IGNORE_MULTIPLE);
    $view = $tracking === COMPLETION_TRACKING_AUTOMATIC ? 1 : 0;
    if ($found) {
        $cm = $DB->get_record('course_modules', ['id' => $found->id]);
        if ((int) $cm->completion !== $tracking || (int) $cm->completionview !== $view) {
            $DB->update_record('course_modules',
                (object) ['id' => $cm->id, 'completion' => $tracking, 'completionview' => $view]);
            rebuild_course_cache($course->id, true);
            echo "course $course->shortname: page '$name' completion tracking set\n";
        }
        return (int) $found->id;
    }
    $module = create_module((object) [
        'modulename' => 'page', 'course' => $course->id, 'section' => 0, 'visible' => 1,
        'name' => $name, 'introeditor' => ['text' => '', 'format' => FORMAT_HTML, 'itemid' => 0],
        'content' => "<p>$name</p>", 'contentformat' => FORMAT_HTML,
        'display' => 5, 'printintro' => 0, 'printlastmodified' => 0, 'revision' => 1,
        'completion' => $tracking,
        'completionview' => $view,
    ]);
    echo "course $course->shortname: page '$name' created (cmid $module->coursemodule)\n";
    return (int) $module->coursemodule;
}

/** Completion tracking on the course (before its activities are made: Moodle drops an
 * activity's tracking on a course without it). */
function ensure_tracking(stdClass $course): void {
    global $DB;
    if (!(int) $course->enablecompletion) {
        $DB->set_field('course', 'enablecompletion', 1, ['id' => $course->id]);
        $course->enablecompletion = 1;
        rebuild_course_cache($course->id, true);
        echo "course $course->shortname: completion tracking enabled\n";
    }
}

/** Criteria requiring each of ``$cmids`` (all of them), saved as course/completion.php saves
 * the admin form. Criteria already set are kept. */
function ensure_criteria(stdClass $course, array $cmids): void {
    $info = new completion_info(get_course($course->id));
    if ($info->has_criteria()) {
        echo "course $course->shortname: completion criteria exist\n";
        return;
    }
    $data = (object) ['id' => $course->id, 'criteria_activity' => array_fill_keys($cmids, 1)];
    (new completion_criteria_activity())->update_config($data);
    foreach ([null, COMPLETION_CRITERIA_TYPE_ACTIVITY] as $type) {  // overall, then activities
        $aggregation = new completion_aggregation(['course' => $course->id, 'criteriatype' => $type]);
        $aggregation->setMethod(COMPLETION_AGGREGATION_ALL);
        $aggregation->save();
    }
    echo "course $course->shortname: completion criteria set (activities " . implode(', ', $cmids) . ")\n";
}

/** The functions in the service, added when missing. */
function ensure_service_functions(string $shortname, array $functions): void {
    global $DB;
    $wsman = new webservice();
    $service = $wsman->get_external_service_by_shortname($shortname);
    if (!$service) {
        cli_problem("no external service $shortname (run shared/moodle/ws_setup.php first)");
        return;
    }
    foreach ($functions as $function) {
        if (!$DB->record_exists('external_functions', ['name' => $function])) {
            cli_problem("skipping unknown function $function");
        } else if (!$wsman->service_function_exists($function, $service->id)) {
            $wsman->add_external_function_to_service($function, $service->id);
            echo "service $shortname: $function added\n";
        }
    }
}

foreach ($courses as $shortname => $fullname) {
    $course = ensure_course($shortname, $fullname, 1);
    ensure_manual_instance($course);
    ensure_tracking($course);
    ensure_criteria($course, [
        ensure_page($course, "$shortname: read", COMPLETION_TRACKING_AUTOMATIC),
        ensure_page($course, "$shortname: acknowledge", COMPLETION_TRACKING_MANUAL),
    ]);
}
foreach ($untracked as $shortname => $fullname) {
    ensure_manual_instance(ensure_course($shortname, $fullname));
}
foreach ($cohorts as $idnumber => $name) {
    ensure_cohort($idnumber, $name);
}
foreach ($fields as $shortname => $name) {
    ensure_text_field($shortname, $name);
}
ensure_service_functions('lmsbridge', [
    'core_completion_get_course_completion_status',
    'core_completion_get_activities_completion_status',
    'core_completion_override_activity_completion_status',
]);
